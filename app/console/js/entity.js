// One entity on its own page: every field, and the Code and Access tabs; live while open.
import { api, revisioned } from "./api.js";
import { errorBox, field, h, replace, show } from "./dom.js";

const ACCESS = ["owner", "group", "access", "branch"];
const SERVER = ["_id", ...ACCESS, "createdAt", "updatedAt"];

export async function entityPage(context, store, id) {
  const path = `/${encodeURIComponent(store)}/${encodeURIComponent(id)}`;
  let { entity, etag } = await revisioned("GET", path);
  const corner = document.getElementById("corner");
  replace(corner, h("a", { href: `/admin/stores/${encodeURIComponent(store)}/${id}`, class: "entity-id" }, id));

  const banner = h("div", { "aria-live": "polite" });
  const fields = h("dl", { class: "fields", "aria-label": "Fields" });
  const panel = h("div", { class: "panel" });
  const tabs = h("div", { role: "tablist", "aria-label": "Entity views" });
  let current = "Code";
  const views = { Code: codeTab, Access: accessTab, History: historyTab };
  for (const name of Object.keys(views)) {
    tabs.append(h("button", { role: "tab", type: "button", "aria-selected": String(name === current),
      onclick: () => { current = name; showTab(); } }, name));
  }
  const remove = h("button", { type: "button", class: "danger", onclick: confirmDelete }, "Delete entity");
  replace(context.main, h("article", { class: "entity" },
    h("p", {}, h("a", { href: `/admin/stores/${encodeURIComponent(store)}`,
      onclick: (event) => { event.preventDefault(); context.navigate(`/admin/stores/${encodeURIComponent(store)}`); } },
    `← ${store}`)),
    h("h1", {}, `Entity ${id}`), banner, fields, tabs, panel, remove));

  // Each field with its value; a save's errors are shown next to the fields they name.
  function renderFields(errors = []) {
    const entries = [...Object.keys(entity).filter((k) => !SERVER.includes(k)), ...SERVER];
    const named = (name) => errors.filter((e) => (e.field || "").split(".")[0] === name);
    replace(fields, entries.filter((k) => k in entity).map((name) => [
      h("dt", {}, name),
      h("dd", {}, h("pre", {}, show(entity[name])), named(name).map((e) =>
        h("span", { class: "field-error", role: "note", "aria-label": `Error in ${e.field}` },
          `${e.field}: ${e.message}`)))]));
    const unplaced = errors.filter((e) => !((e.field || "").split(".")[0] in entity));
    for (const e of unplaced) {
      fields.append(h("dt", {}, e.field || "(entity)"), h("dd", {},
        h("span", { class: "field-error", role: "note", "aria-label": `Error in ${e.field || "entity"}` }, e.message)));
    }
  }

  function showTab() {
    for (const tab of tabs.children) tab.setAttribute("aria-selected", String(tab.textContent === current));
    views[current]();
  }

  function codeTab() {
    const editor = h("textarea", { name: "code", rows: 18, spellcheck: "false", "aria-label": "Entity JSON" });
    editor.value = JSON.stringify(entity, null, 2);
    const result = h("div", { "aria-live": "polite" });
    const save = async () => {
      let edited;
      try { edited = JSON.parse(editor.value); } catch (error) {
        replace(result, errorBox({ message: `Not valid JSON: ${error.message}` }));
        return;
      }
      const changes = {};
      for (const [key, value] of Object.entries(edited)) {
        if (SERVER.includes(key)) continue;
        if (JSON.stringify(value) !== JSON.stringify(entity[key])) changes[key] = value;
      }
      for (const key of Object.keys(entity)) {
        if (!SERVER.includes(key) && !(key in edited)) changes[key] = null;
      }
      if (!Object.keys(changes).length) { replace(result, h("p", { class: "hint" }, "Nothing changed.")); return; }
      try {
        // Only if nobody changed it since it was loaded: a conflict shows both versions.
        ({ entity, etag } = await revisioned("PATCH", path, changes, etag ? { "If-Match": etag } : {}));
        renderFields();
        editor.value = JSON.stringify(entity, null, 2);
        replace(result, h("p", { class: "ok", role: "status" }, "Saved."));
      } catch (error) {
        if (error.status === 412 && error.body && error.body.current) {
          const theirs = error.body.current;
          replace(result, h("div", { class: "error", role: "alert", "aria-label": "Conflict" },
            h("p", {}, "Someone else changed this entity meanwhile. Nothing was saved. Compare, then save again to overwrite."),
            h("div", { class: "versions" },
              h("section", { "aria-label": "Their version" }, h("h3", {}, "Stored now"), h("pre", {}, JSON.stringify(theirs, null, 2))),
              h("section", { "aria-label": "Your version" }, h("h3", {}, "Yours"), h("pre", {}, JSON.stringify(edited, null, 2))))));
          entity = theirs;
          etag = null;  // the next save is a deliberate overwrite of what was shown
          renderFields();
          return;
        }
        renderFields(error.errors || []);
        replace(result, errorBox(error));
      }
    };
    editor.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key === "s") { event.preventDefault(); save(); }
    });
    replace(panel, h("p", { class: "hint" }, "Edit the JSON and save (Ctrl+S). Only changed fields are sent; a removed field is set to null."),
      editor, h("button", { type: "button", onclick: save }, "Save"), result);
  }

  async function accessTab() {
    const owner = h("input", { name: "owner", value: entity.owner || "", disabled: !context.me.admin });
    const group = h("input", { name: "group", value: entity.group || "" });
    const access = h("input", { name: "access", value: (entity.access || []).join(", ") });
    const branch = h("input", { name: "branch", value: (entity.branch || []).join(", ") });
    const result = h("div", { "aria-live": "polite" });
    const list = (input) => input.value.split(",").map((x) => x.trim()).filter(Boolean);
    const form = h("form", { "aria-label": "Access" },
      field("Owner (user id)", owner, context.me.admin ? null : "Only admins change the owner"),
      field("Group", group), field("Access (users, groups or *)", access), field("Branches", branch),
      h("button", { type: "submit" }, "Save access"), result);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { group: group.value.trim() || null, access: list(access), branch: list(branch) };
      if (context.me.admin && owner.value.trim() !== entity.owner) body.owner = owner.value.trim();
      try {
        ({ entity, etag } = await revisioned("PUT", `${path}/access`, body));
        renderFields();
        replace(result, h("p", { class: "ok", role: "status" }, "Access saved."));
      } catch (error) { replace(result, errorBox(error)); }
    });
    const parts = [form];
    if (context.me.admin) {
      const users = await api("GET", "/_users");
      const who = h("select", { name: "user" }, users.map((u) => h("option", { value: u.id }, `${u.login}${u.admin ? " (admin)" : ""}`)));
      const answer = h("div", { "aria-live": "polite" });
      const explain = async () => {
        try {
          const found = await api("GET", `${path}/_explain?user=${encodeURIComponent(who.value)}`);
          replace(answer, h("ul", { class: "explain", "aria-label": "Explanation" },
            h("li", {}, `Read: ${found.read ? "yes" : "no"}${found.readVia.length ? ` (through ${found.readVia.join(", ")})` : ""}`),
            h("li", {}, `Write: ${found.write ? "yes" : "no"}${found.writeVia.length ? ` (through ${found.writeVia.join(", ")})` : ""}`),
            h("li", {}, `Change access: ${found.changeAccess ? "yes" : "no"}`)));
        } catch (error) { replace(answer, errorBox(error)); }
      };
      parts.push(h("section", { "aria-label": "Explain access" }, h("h2", {}, "Explain access"),
        field("User to explain", who), h("button", { type: "button", onclick: explain }, "Explain"), answer));
    }
    replace(panel, ...parts);
  }

  async function historyTab() {
    replace(panel, h("p", { class: "hint", role: "status" }, "Loading the history…"));
    let entries;
    try { entries = await api("GET", `${path}/_history`); } catch (error) { replace(panel, errorBox(error)); return; }
    const users = new Map();
    if (context.me.admin) {
      try { for (const u of await api("GET", "/_users")) users.set(u.id, u.login); } catch { /* ids then */ }
    }
    const who = (id) => (id === null ? "the database (not through the API)" : users.get(id) || id);
    replace(panel, entries.length
      ? h("ol", { class: "history", "aria-label": "History" }, entries.map((e) =>
        h("li", {}, h("strong", {}, `rev ${e.rev} · ${e.op}`), ` ${e.at} by ${who(e.by)}`,
          Object.keys(e.changes).length
            ? h("ul", {}, Object.entries(e.changes).map(([field, change]) =>
              h("li", {}, h("code", {}, field), `: ${JSON.stringify(change.from)} → ${JSON.stringify(change.to)}`)))
            : null)))
      : h("p", { class: "hint" }, "No recorded changes yet."));
  }

  function confirmDelete() {
    const dialog = h("div", { class: "confirm", role: "alertdialog", "aria-label": "Confirm delete" },
      h("p", {}, `Delete entity ${id}? This cannot be undone.`),
      h("button", { type: "button", class: "danger", onclick: async () => {
        try {
          await api("DELETE", path);
          dialog.remove();
          context.navigate(`/admin/stores/${encodeURIComponent(store)}`);
        } catch (error) { dialog.append(errorBox(error)); }
      } }, "Yes, delete"),
      h("button", { type: "button", onclick: () => dialog.remove() }, "Cancel"));
    remove.after(dialog);
  }

  const stop = context.live.subscribe({ store, id }, (event) => {
    if (event.op === "delete" || event.op === "leave") {
      replace(banner, h("p", { class: "error", role: "alert" },
        event.op === "delete" ? "This entity was deleted elsewhere." : "You can no longer read this entity."));
      remove.disabled = true;
      return;
    }
    const mine = JSON.stringify(event.entity) === JSON.stringify(entity);
    entity = event.entity;
    if (mine || etag === null) etag = `"${event.rev}"`;
    renderFields();
    if (!mine) replace(banner, h("p", { class: "hint", role: "status" }, `Updated elsewhere at ${entity.updatedAt}.`));
  });
  context.onLeave(stop);
  renderFields();
  showTab();
}
