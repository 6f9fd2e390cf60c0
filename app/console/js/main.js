// The console's shell: sign-in, navigation, routing by URL, theme and keyboard.
import { api } from "./api.js";
import { errorBox, field, h, replace } from "./dom.js";
import { Live } from "./socket.js";
import { editing } from "./editing.js";
import { entityPage } from "./entity.js";
import { storesPage } from "./stores.js";
import { usersPage } from "./users.js";
import { tokensPage } from "./tokens.js";

const root = document.getElementById("app");
const state = { me: null, live: null, cleanup: [] };

export function navigate(path) {
  history.pushState(null, "", path);
  route();
}

function applyTheme() {
  const chosen = localStorage.getItem("theme");
  if (chosen) document.documentElement.dataset.theme = chosen;
  else delete document.documentElement.dataset.theme;
}

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  localStorage.setItem("theme", dark ? "light" : "dark");
  applyTheme();
}

function signInForm(message) {
  const login = h("input", { name: "login", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const problem = h("div", { "aria-live": "assertive" }, message ? errorBox({ message }) : null);
  const form = h("form", { class: "card signin", "aria-label": "Sign in" },
    h("h1", {}, "Sign in"),
    field("Login", login), field("Password", password), problem,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", "/auth", { login: login.value, password: password.value });
      await start();
    } catch (error) {
      replace(problem, errorBox(error.status === 401 ? { message: "Wrong login or password." } : error));
    }
  });
  replace(root, h("main", { class: "centered" }, form));
  login.focus();
}

async function signOut() {
  try { await api("DELETE", "/auth"); } catch { /* the session may be gone already */ }
  if (state.live) state.live.close();
  state.me = null;
  history.pushState(null, "", "/admin");
  signInForm();
}

function shell(content) {
  const me = state.me;
  const link = (path, label) => h("a", {
    href: path, "aria-current": location.pathname === path ? "page" : null,
    onclick: (event) => { event.preventDefault(); navigate(path); },
  }, label);
  const liveState = h("span", { class: "live-state", title: "Realtime connection" }, state.live && state.live.ready ? "live" : "connecting");
  state.live.listeners.clear();
  state.live.listeners.add((value) => { liveState.textContent = value; });
  const nav = h("nav", { "aria-label": "Sections" },
    h("span", { class: "menu-title" }, "Administration"),
    link("/admin", "Editing"),
    me.admin ? link("/admin/stores", "Stores") : null,
    me.admin ? link("/admin/users", "Users") : null,
    h("span", { class: "menu-title" }, "Account"),
    link("/admin/account/tokens", "Tokens"));
  const header = h("header", { class: "top" },
    h("div", { id: "corner", class: "corner", "aria-label": "Selected entity" }),
    h("div", { class: "who" }, liveState, ` ${me.login}${me.admin ? " (admin)" : ""} `,
      h("button", { type: "button", class: "plain", onclick: toggleTheme }, "Toggle dark mode"),
      h("button", { type: "button", class: "plain", onclick: signOut }, "Sign out")));
  replace(root, header, h("div", { class: "layout" }, nav, h("main", { id: "main" }, content)));
}

async function route() {
  for (const stop of state.cleanup.splice(0)) stop();
  if (!state.me) return;
  const parts = location.pathname.replace(/\/+$/, "").split("/").slice(2).map(decodeURIComponent);
  const main = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  shell(main);
  const context = { me: state.me, live: state.live, main, navigate, onLeave: (f) => state.cleanup.push(f) };
  try {
    if (parts[0] === "stores" && parts.length === 3) await entityPage(context, parts[1], parts[2]);
    else if (parts[0] === "stores" && parts.length === 2) await editing(context, parts[1]);
    else if (parts[0] === "stores" && state.me.admin) await storesPage(context);
    else if (parts[0] === "users" && state.me.admin) await usersPage(context);
    else if (parts[0] === "account" && parts[1] === "tokens") await tokensPage(context);
    else await editing(context, null);
  } catch (error) {
    if (error.status === 401) { signInForm("Your session has ended; sign in again."); return; }
    replace(main, errorBox(error));
  }
}

async function start() {
  try {
    state.me = await api("GET", "/_me");
  } catch (error) {
    if (error.status === 401) { signInForm(); return; }
    replace(root, errorBox(error));
    return;
  }
  if (state.live) state.live.close();
  state.live = new Live();
  await route();
}

document.addEventListener("keydown", (event) => {
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || "");
  if (event.key === "/" && !typing) {
    const filter = document.querySelector("[data-filter]");
    if (filter) { event.preventDefault(); filter.focus(); }
  } else if (event.key === "Escape") {
    const dialog = document.querySelector(".confirm");
    if (dialog) dialog.remove();
    else if (typing) document.activeElement.blur();
    else if (location.pathname.split("/").length > 4) history.back();
  }
});

window.addEventListener("popstate", route);
applyTheme();
start();
