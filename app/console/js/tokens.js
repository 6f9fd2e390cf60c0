// Account → Tokens: the signed-in user's personal API tokens.
import { api } from "./api.js";
import { errorBox, field, h, replace } from "./dom.js";

const LIFETIMES = [["1 day", 86400], ["30 days", 2592000], ["90 days", 7776000], ["1 year", 31536000]];

export async function tokensPage(context) {
  const tokens = await api("GET", "/_tokens");
  const result = h("div", { "aria-live": "polite" });
  const name = h("input", { name: "name", required: true, maxlength: 200 });
  const lifetime = h("select", { name: "lifetime" }, LIFETIMES.map(([label, seconds]) => h("option", { value: seconds }, label)));
  const form = h("form", { "aria-label": "New token" }, h("h2", {}, "New token"),
    field("Token name", name), field("Lifetime", lifetime), h("button", { type: "submit" }, "Create token"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const made = await api("POST", "/_tokens", { name: name.value, expiresIn: Number(lifetime.value) });
      await tokensPage(context);
      const secret = h("input", { readonly: true, value: made.token, "aria-label": "New token secret", class: "secret" });
      const copied = h("span", { role: "status" });
      const copy = async () => {
        secret.select();
        try { await navigator.clipboard.writeText(made.token); copied.textContent = " Copied."; }
        catch { document.execCommand("copy"); copied.textContent = " Copied (selected)."; }
      };
      context.main.prepend(h("div", { class: "card", role: "region", "aria-label": "Token created" },
        h("p", {}, `Token “${made.name}” created. Copy it now: it is shown only once.`),
        secret, h("button", { type: "button", onclick: copy }, "Copy token"), copied));
    } catch (error) { replace(result, errorBox(error)); }
  });
  const rows = tokens.map((token) => h("tr", {},
    h("td", {}, token.name), h("td", {}, token.createdAt || ""), h("td", {}, token.expiresAt || ""),
    h("td", {}, token.lastUsedAt || "never"),
    h("td", {}, h("button", { type: "button", onclick: async () => {
      try { await api("DELETE", `/_tokens/${token.id}`); await tokensPage(context); }
      catch (error) { replace(result, errorBox(error)); }
    } }, `Revoke ${token.name}`))));
  replace(context.main, h("h1", {}, "Tokens"), result,
    tokens.length
      ? h("table", { "aria-label": "Tokens" },
        h("thead", {}, h("tr", {}, ["Name", "Created", "Expires", "Last used", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows))
      : h("p", { class: "hint" }, "No personal tokens yet. Create one for an integration below."),
    form);
}
