// Administration → Editing: the stores, and a store's entities as a live, paged table.
import { api, page, query } from "./api.js";
import { errorBox, field, h, replace, short } from "./dom.js";

const SERVER = ["_id", "owner", "group", "access", "branch", "createdAt", "updatedAt"];

export async function editing(context, store) {
  const stores = await api("GET", "/_stores");
  const list = h("ul", { class: "stores", "aria-label": "Stores" }, stores.map((s) =>
    h("li", {}, h("a", {
      href: `/admin/stores/${encodeURIComponent(s.name)}`,
      "aria-current": s.name === store ? "page" : null,
      onclick: (event) => { event.preventDefault(); context.navigate(`/admin/stores/${encodeURIComponent(s.name)}`); },
    }, s.name, s.count !== undefined ? h("span", { class: "count" }, ` ${s.count}`) : null,
    s.defined ? h("span", { class: "badge", title: "Has a definition" }, "defined") : null))));
  const body = h("section", { class: "store-view" });
  replace(context.main, h("div", { class: "editing" },
    h("aside", {}, h("h2", {}, "Stores"),
      stores.length ? list : h("p", { class: "hint" }, "No stores yet. Entities posted to /api/v1/<store> appear here.")),
    body));
  if (!store) {
    replace(body, h("h1", {}, "Editing"), h("p", { class: "hint" }, "Pick a store to browse its entities."));
    return;
  }
  await storeTable(context, store, body);
}

async function storeTable(context, store, body) {
  let definition = null;
  try { definition = await api("GET", `/_stores/${encodeURIComponent(store)}`); } catch { /* no such store yet */ }
  const declared = definition && definition.schema && definition.schema.properties
    ? Object.keys(definition.schema.properties) : null;
  const state = { columns: declared, chosen: null, starts: [null], index: 0, next: null, rows: new Map(), selected: null };

  const where = h("input", { name: "where", "data-filter": true, placeholder: '{"stage": "won"}', spellcheck: "false" });
  const from = h("input", { name: "from", type: "datetime-local", step: "1" });
  const to = h("input", { name: "to", type: "datetime-local", step: "1" });
  const picker = h("fieldset", { class: "columns" }, h("legend", {}, "Columns"));
  const problem = h("div");
  const table = h("table", { class: "entities", "aria-label": `Entities of ${store}` });
  const previous = h("button", { type: "button", onclick: () => go(state.index - 1) }, "Previous page");
  const following = h("button", { type: "button", onclick: () => go(state.index + 1) }, "Next page");
  const position = h("span", { class: "hint" });
  const apply = h("button", { type: "submit" }, "Apply");
  const controls = h("form", { class: "controls", "aria-label": "Filter" },
    field("Filter (where)", where, "JSON, e.g. {\"stage\": \"won\"}; / focuses it"),
    field("Created from", from), field("Created to", to), apply);
  controls.addEventListener("submit", (event) => { event.preventDefault(); state.starts = [null]; go(0); });
  replace(body, h("h1", {}, store), definition && definition.title ? h("p", {}, definition.title) : null,
    controls, picker, problem, h("div", { class: "table-wrap" }, table),
    h("div", { class: "pager" }, previous, following, position));

  const time = (input) => (input.value ? new Date(input.value).toISOString() : undefined);
  const columns = () => state.chosen || state.columns || [];

  // The column picker maps to `only`: the server sends just the chosen fields.
  function params(after) {
    return {
      where: where.value.trim() || undefined, from: time(from), to: time(to),
      after: after || undefined, limit: 50,
      only: state.chosen ? [...state.chosen, "updatedAt"].join(",") : undefined,
    };
  }

  async function go(index) {
    if (index < 0 || index >= state.starts.length) return;
    replace(problem);
    let result;
    try {
      result = await page(`/${encodeURIComponent(store)}${query(params(state.starts[index]))}`);
    } catch (error) { replace(problem, errorBox(error)); return; }
    state.index = index;
    if (result.next) {
      const after = new URLSearchParams(result.next.split("?")[1]).get("after");
      state.starts[index + 1] = after;
    } else state.starts.length = index + 1;
    if (!state.columns) {
      const seen = new Set();
      for (const entity of result.items) for (const key of Object.keys(entity)) if (!SERVER.includes(key)) seen.add(key);
      state.columns = [...seen].slice(0, 12);
    }
    renderPicker();
    render(result.items);
    previous.disabled = index === 0;
    following.disabled = !result.next;
    position.textContent = ` Page ${index + 1}${result.items.length ? "" : " (no entities match)"}`;
    subscribe();
  }

  function renderPicker() {
    replace(picker, h("legend", {}, "Columns"), (state.columns || []).map((name) => {
      const box = h("input", { type: "checkbox", checked: !state.chosen || state.chosen.includes(name),
        onchange: () => {
          const ticked = [...picker.querySelectorAll("input:checked")].map((b) => b.dataset.column);
          state.chosen = ticked;
          go(state.index);
        } });
      box.dataset.column = name;
      return h("label", {}, box, ` ${name}`);
    }));
  }

  function row(entity) {
    const tr = h("tr", { tabindex: "-1", "data-id": entity._id, onclick: () => select(entity._id),
      ondblclick: () => open(entity._id) },
      h("td", { class: "id" }, entity._id),
      columns().map((name) => h("td", {}, short(entity[name]))),
      h("td", { class: "time" }, entity.updatedAt || ""));
    return tr;
  }

  function render(items) {
    state.rows.clear();
    const head = h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "_id"),
      columns().map((name) => h("th", { scope: "col" }, name)), h("th", { scope: "col" }, "updatedAt")));
    const rows = h("tbody");
    for (const entity of items) {
      const tr = row(entity);
      state.rows.set(entity._id, { entity, tr });
      rows.append(tr);
    }
    replace(table, head, rows);
    if (!items.length) rows.append(h("tr", {}, h("td", { colspan: columns().length + 2, class: "hint" },
      "No entities here. Change the filter, or create one over REST.")));
    if (state.selected && state.rows.has(state.selected)) select(state.selected);
  }

  function select(id) {
    state.selected = id;
    for (const { tr } of state.rows.values()) tr.classList.toggle("selected", tr.dataset.id === id);
    const current = state.rows.get(id);
    if (current) current.tr.focus();
    const corner = document.getElementById("corner");
    replace(corner, h("a", {
      href: `/admin/stores/${encodeURIComponent(store)}/${id}`, class: "entity-id",
      onclick: (event) => { event.preventDefault(); open(id); },
    }, id));
  }

  function open(id) {
    context.navigate(`/admin/stores/${encodeURIComponent(store)}/${id}`);
  }

  function move(step) {
    const ids = [...state.rows.keys()];
    if (!ids.length) return;
    const at = ids.indexOf(state.selected);
    select(ids[Math.max(0, Math.min(ids.length - 1, at < 0 ? 0 : at + step))]);
  }

  const keys = (event) => {
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || "")) return;
    if (event.key === "j" || event.key === "ArrowDown") { event.preventDefault(); move(1); }
    else if (event.key === "k" || event.key === "ArrowUp") { event.preventDefault(); move(-1); }
    else if (event.key === "Enter" && state.selected) { event.preventDefault(); open(state.selected); }
  };
  document.addEventListener("keydown", keys);
  context.onLeave(() => document.removeEventListener("keydown", keys));

  let unsubscribe = null;
  function subscribe() {
    if (unsubscribe) unsubscribe();
    let filter;
    try { filter = where.value.trim() ? JSON.parse(where.value) : undefined; } catch { filter = undefined; }
    unsubscribe = context.live.subscribe({ store, ...(filter ? { where: filter } : {}) }, (event) => {
      const known = state.rows.get(event.id);
      if (event.op === "delete" || event.op === "leave") {
        if (known) { known.tr.remove(); state.rows.delete(event.id); }
      } else if (known) {
        const tr = row(event.entity);
        tr.classList.add("changed");
        known.tr.replaceWith(tr);
        state.rows.set(event.id, { entity: event.entity, tr });
        if (state.selected === event.id) tr.classList.add("selected");
      } else {
        const tr = row(event.entity);
        tr.classList.add("changed");
        table.querySelector("tbody td.hint")?.closest("tr")?.remove();
        table.querySelector("tbody").append(tr);
        state.rows.set(event.id, { entity: event.entity, tr });
      }
    });
  }
  context.onLeave(() => unsubscribe && unsubscribe());
  await go(0);
}
