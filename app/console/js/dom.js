// DOM helpers. Every value from the server is inserted as text (textContent or attribute
// values), never as HTML, so stored data cannot run script in the console.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "value") {
      node.value = value;
    } else if (name === "checked") {
      node.checked = Boolean(value);
    } else if (name === "href" || name === "src") {
      node.setAttribute(name, safeUrl(String(value)));
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Only the console's own paths: a stored "javascript:" value never becomes a link.
export function safeUrl(url) {
  return url.startsWith("/") && !url.startsWith("//") ? url : "#";
}

export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

// A value as readable text: strings as they are, everything else as indented JSON.
export function show(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

export function short(value, length = 80) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  if (text === undefined) return "";
  return text.length > length ? text.slice(0, length - 1) + "…" : text;
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("small", { class: "hint" }, hint) : null);
}

export function errorBox(error) {
  const box = h("div", { class: "error", role: "alert" }, error.message || String(error));
  if (error.errors && error.errors.length) {
    box.append(h("ul", {}, error.errors.map((e) =>
      h("li", {}, h("code", {}, e.field || "(entity)"), ` ${e.rule}: ${e.message}`))));
  }
  return box;
}
