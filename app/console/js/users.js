// Users (admins): list, create, change groups/branches/admin, disable, reset a password.
import { api } from "./api.js";
import { errorBox, field, h, replace } from "./dom.js";

const list = (text) => text.split(",").map((x) => x.trim()).filter(Boolean);

export async function usersPage(context) {
  const users = await api("GET", "/_users");
  const result = h("div", { "aria-live": "polite" });
  const rows = users.map((user) => {
    const groups = h("input", { "aria-label": `Groups of ${user.login}`, value: user.groups.join(", ") });
    const branches = h("input", { "aria-label": `Branches of ${user.login}`, value: user.branches.join(", ") });
    const isAdmin = h("input", { type: "checkbox", "aria-label": `${user.login} is admin`, checked: user.admin });
    const disabled = h("input", { type: "checkbox", "aria-label": `${user.login} is disabled`, checked: user.disabled });
    const password = h("input", { type: "password", "aria-label": `New password for ${user.login}`, autocomplete: "new-password" });
    const save = async () => {
      const body = { groups: list(groups.value), branches: list(branches.value), admin: isAdmin.checked, disabled: disabled.checked };
      if (password.value) body.password = password.value;
      try {
        await api("PATCH", `/_users/${user.id}`, body);
        password.value = "";
        replace(result, h("p", { class: "ok", role: "status" }, `Saved ${user.login}.`));
      } catch (error) { replace(result, errorBox(error)); }
    };
    return h("tr", {}, h("td", {}, user.login), h("td", {}, groups), h("td", {}, branches),
      h("td", {}, isAdmin), h("td", {}, disabled), h("td", {}, password),
      h("td", {}, h("button", { type: "button", onclick: save }, `Save ${user.login}`)));
  });
  const login = h("input", { name: "login", required: true });
  const password = h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" });
  const groups = h("input", { name: "groups" });
  const branches = h("input", { name: "branches" });
  const isAdmin = h("input", { name: "admin", type: "checkbox" });
  const create = h("form", { "aria-label": "New user" }, h("h2", {}, "New user"),
    field("Login", login), field("Password", password), field("Groups", groups), field("Branches", branches),
    field("Admin", isAdmin), h("button", { type: "submit" }, "Create user"));
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", "/_users", { login: login.value, password: password.value,
        groups: list(groups.value), branches: list(branches.value), admin: isAdmin.checked });
      await usersPage(context);
    } catch (error) { replace(result, errorBox(error)); }
  });
  replace(context.main, h("h1", {}, "Users"), result,
    h("table", { "aria-label": "Users" },
      h("thead", {}, h("tr", {}, ["Login", "Groups", "Branches", "Admin", "Disabled", "Reset password", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)),
    create);
}
