// Stores (admins): store definitions, edited with a form for the common rules or as raw
// JSON Schema, with a dry run before saving.
import { api } from "./api.js";
import { errorBox, field, h, replace } from "./dom.js";

const TYPES = ["string", "number", "integer", "boolean", "object", "array", "any"];

export async function storesPage(context) {
  const stores = await api("GET", "/_stores");
  const editor = h("section", { class: "definition" });
  const pick = (name) => edit(name, editor);
  const name = h("input", { name: "store", placeholder: "deals", pattern: "[A-Za-z][A-Za-z0-9_-]{0,63}" });
  replace(context.main, h("h1", {}, "Stores"),
    h("p", {}, "Each store may have a definition: the rules every write must meet. ",
      h("a", { href: "/api/docs" }, "API reference"), " · ", h("a", { href: "/api/v1/openapi.json" }, "OpenAPI document")),
    h("table", { "aria-label": "Store definitions" },
      h("thead", {}, h("tr", {}, ["Store", "Defined", "Version", "Entities", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, stores.map((s) => h("tr", {},
        h("td", {}, s.name), h("td", {}, s.defined ? "yes" : "no"), h("td", {}, s.version ?? ""),
        h("td", {}, s.count ?? ""),
        h("td", {}, h("button", { type: "button", onclick: () => pick(s.name) }, `Edit ${s.name}`)))))),
    h("form", { class: "inline", "aria-label": "New definition",
      onsubmit: (event) => { event.preventDefault(); if (name.value) pick(name.value); } },
    field("New store name", name), h("button", { type: "submit" }, "Define")),
    editor);
}

async function edit(store, editor) {
  let current = null;
  try { current = await api("GET", `/_stores/${encodeURIComponent(store)}`); } catch { /* new store */ }
  const schema = current && current.schema ? current.schema : { type: "object", properties: {} };
  const unique = new Set(current && current.unique ? current.unique : []);
  const rows = h("tbody");
  const raw = h("textarea", { name: "schema", rows: 14, spellcheck: "false", "aria-label": "JSON Schema" });
  const title = h("input", { name: "title", value: (current && current.title) || "" });
  const result = h("div", { "aria-live": "polite" });

  function addRow(name = "", rules = {}) {
    const type = Array.isArray(rules.type) ? rules.type[0] : rules.type || "any";
    const cells = {
      name: h("input", { "aria-label": "Field name", value: name }),
      type: h("select", { "aria-label": "Field type" }, TYPES.map((t) => h("option", { value: t }, t))),
      required: h("input", { type: "checkbox", "aria-label": "Required", checked: (schema.required || []).includes(name) }),
      readOnly: h("input", { type: "checkbox", "aria-label": "Read-only", checked: rules.readOnly === true }),
      unique: h("input", { type: "checkbox", "aria-label": "Unique", checked: unique.has(name) }),
      fallback: h("input", { "aria-label": "Default (JSON)", value: "default" in rules ? JSON.stringify(rules.default) : "" }),
    };
    cells.type.value = type;
    const tr = h("tr", {}, Object.values(cells).map((c) => h("td", {}, c)),
      h("td", {}, h("button", { type: "button", onclick: () => tr.remove() }, "Remove field")));
    tr.cells_ = cells;
    rows.append(tr);
  }

  function fromForm() {
    const built = JSON.parse(raw.value || "{}");
    built.type = "object";
    built.properties = {};
    const required = [];
    for (const tr of rows.children) {
      const c = tr.cells_;
      const name = c.name.value.trim();
      if (!name) continue;
      const rule = { ...((schema.properties || {})[name] || {}) };
      if (c.type.value === "any") delete rule.type; else rule.type = c.type.value;
      if (c.readOnly.checked) rule.readOnly = true; else delete rule.readOnly;
      if (c.fallback.value.trim()) rule.default = JSON.parse(c.fallback.value); else delete rule.default;
      built.properties[name] = rule;
      if (c.required.checked) required.push(name);
    }
    if (required.length) built.required = required; else delete built.required;
    raw.value = JSON.stringify(built, null, 2);
  }

  function body() {
    const uniques = [...rows.children].filter((tr) => tr.cells_.unique.checked)
      .map((tr) => tr.cells_.name.value.trim()).filter(Boolean);
    const definition = { schema: JSON.parse(raw.value), unique: uniques };
    if (title.value.trim()) definition.title = title.value.trim();
    if (current && current.indexes) definition.indexes = current.indexes;
    return definition;
  }

  async function send(dryRun) {
    let definition;
    try { fromForm(); definition = body(); } catch (error) {
      replace(result, errorBox({ message: `Not valid JSON: ${error.message}` }));
      return;
    }
    replace(result, h("p", { class: "hint", role: "status" }, dryRun ? "Checking the stored entities…" : "Saving…"));
    try {
      const answer = await api("PUT", `/_stores/${encodeURIComponent(store)}${dryRun ? "?dryRun=true" : ""}`, definition);
      if (dryRun) {
        replace(result, h("div", { role: "status" },
          h("p", {}, `${answer.rejected} of ${answer.checked} stored entities would be rejected.`),
          h("ul", {}, answer.examples.map((e) => h("li", {}, h("code", {}, e.id), " ",
            e.errors.map((x) => `${x.field || "(entity)"}: ${x.message}`).join("; "))))));
      } else {
        current = answer;
        replace(result, h("p", { class: "ok", role: "status" }, `Saved as version ${answer.version}.`));
      }
    } catch (error) { replace(result, errorBox(error)); }
  }

  raw.value = JSON.stringify(schema, null, 2);
  for (const [name, rules] of Object.entries(schema.properties || {})) addRow(name, rules);
  replace(editor, h("h2", {}, `Definition of ${store}`),
    current && current.version ? h("p", { class: "hint" }, `Version ${current.version}`) : null,
    field("Title", title),
    h("table", { "aria-label": "Fields" },
      h("thead", {}, h("tr", {}, ["Name", "Type", "Required", "Read-only", "Unique", "Default", ""].map((t) => h("th", { scope: "col" }, t)))),
      rows),
    h("button", { type: "button", onclick: () => addRow() }, "Add field"),
    h("button", { type: "button", onclick: () => { try { fromForm(); } catch (error) { replace(result, errorBox(error)); } } }, "Update JSON from the form"),
    field("JSON Schema (the form's rules are merged in when saving)", raw),
    h("button", { type: "button", onclick: () => send(true) }, "Dry run"),
    h("button", { type: "button", onclick: () => send(false) }, "Save definition"),
    h("a", { href: "/api/docs" }, `API reference for ${store}`),
    result);
}
