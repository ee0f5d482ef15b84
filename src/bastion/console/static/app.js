// The bastion web console: a small front end over the JSON API, in cookie mode.
//
// No framework and no build step. Every text from the API reaches the page through
// textContent, attributes through setAttribute, and elements through createElement: nothing
// is ever assigned to innerHTML/outerHTML or written with document.write. A note's body (HTML
// the server already sanitized) is parsed in an inert document and rebuilt from an
// allow-list (renderNoteBody), so it cannot run script even if the server's sanitizer were
// bypassed; the page's CSP (no inline script, Trusted Types) is the second wall.

"use strict";

// -- Trusted Types ------------------------------------------------------------------------
// The CSP requires Trusted Types for every script sink and allows this one policy. It is
// used in exactly one place: handing a note's HTML to DOMParser, which builds an inert
// document (no script runs, nothing loads, no handler fires) that renderNoteBody then copies
// from. Anything else that tried to put a string into an HTML sink would throw.
const NOTE_POLICY_NAME = "bastion-note";
const notePolicy = globalThis.trustedTypes
  ? globalThis.trustedTypes.createPolicy(NOTE_POLICY_NAME, { createHTML: (html) => html })
  : null;

// -- DOM helpers ----------------------------------------------------------------------------

/** An element with attributes, listeners (on* keys, as functions) and children (strings become
 * text nodes; null/false are skipped). */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) {
      // Listeners only: an on* attribute would be inline script (and the CSP refuses it).
      if (typeof value !== "function") throw new TypeError(`${name} must be a function`);
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

let uniqueIds = 0;
function uid(prefix) {
  uniqueIds += 1;
  return `${prefix}-${uniqueIds}`;
}

/** A labelled form field: the <label> is tied to the control by id. */
function field(labelText, control, hintText = null) {
  control.id = control.id || uid("field");
  const parts = [h("label", { for: control.id }, labelText)];
  if (hintText) {
    const hint = h("p", { class: "hint", id: uid("hint") }, hintText);
    control.setAttribute("aria-describedby", hint.id);
    parts.push(control, hint);
  } else {
    parts.push(control);
  }
  return h("div", { class: "field" }, parts);
}

/** A <thead> row of column headers. */
function columns(...names) {
  return h("thead", {}, h("tr", {}, names.map((name) => h("th", { scope: "col" }, name))));
}

function backToNotes() {
  return h("p", {}, h("a", { href: "#/notes" }, "Back to notes"));
}

function heading(text) {
  // Focused after each navigation, so keyboard and screen-reader users start at the top.
  return h("h1", { tabindex: "-1", id: "page-heading" }, text);
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return h("time", { datetime: iso }, date.toLocaleString());
}

function busy(button, promise) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  return promise.finally(() => {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  });
}

/** A form of ``parts`` ending in its submit button (``submit``: the button's text, or the
 * button); on submit, ``action`` runs with the button busy and any failure shown. */
function actionForm(attributes, parts, submit, action) {
  const button = submit instanceof Node ? submit : h("button", { type: "submit" }, submit);
  const form = h("form", attributes, parts, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(button, attempt(action));
  });
  return form;
}

/** A button that runs ``action`` when clicked, busy meanwhile, any failure shown. */
function actionButton(attributes, text, action) {
  const button = h("button", { type: "button", ...attributes }, text);
  button.addEventListener("click", () => busy(button, attempt(action)));
  return button;
}

/** The account's name, hidden, for password managers (a form with no username field). */
function accountNameField(username) {
  return h("input", {
    type: "text", autocomplete: "username", value: username, hidden: true, readonly: true,
  });
}

function passwordInput(autocomplete = "current-password") {
  return h("input", { type: "password", autocomplete, required: true });
}

/** A code from an authenticator app: six digits, which phones offer from their keypad and
 * from a text message or the app ("one-time-code"). */
function codeInput() {
  return h("input", {
    name: "otp", autocomplete: "one-time-code", inputmode: "numeric", required: true,
    pattern: "[0-9]{6}", maxlength: "6", size: "8", spellcheck: "false",
    title: "The 6 digits your authenticator app shows",
  });
}

const CODE_LABEL = "Code from your authenticator app";

/** "New password" and "New password, again": ``fields`` for the form; ``value()``; and
 * ``confirmed()``, false (the mismatch said, the second field focused) when they differ. */
function newPasswordPair(hintText) {
  const next = h("input", {
    type: "password", autocomplete: "new-password", required: true, minlength: "15",
    maxlength: "128",
  });
  const again = passwordInput("new-password");
  return {
    fields: [field("New password", next, hintText), field("New password, again", again)],
    value: () => next.value,
    confirmed() {
      if (next.value === again.value) return true;
      showAlert("The new passwords do not match.");
      again.focus();
      return false;
    },
  };
}

// -- Messages -------------------------------------------------------------------------------

const alertRegion = () => document.getElementById("alert");
const statusRegion = () => document.getElementById("status");
let flash = null; // { kind: "alert" | "status", text } shown by the next page

function showAlert(text) {
  statusRegion().textContent = "";
  alertRegion().textContent = text;
}

function showStatus(text) {
  alertRegion().textContent = "";
  statusRegion().textContent = text;
}

function clearMessages() {
  alertRegion().textContent = "";
  statusRegion().textContent = "";
}

// -- The API --------------------------------------------------------------------------------

const CSRF_COOKIES = ["__Host-bastion_csrf", "bastion_csrf"];
const UNSAFE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

function csrfToken() {
  const cookies = new Map();
  for (const part of document.cookie.split(";")) {
    const at = part.indexOf("=");
    if (at > 0) cookies.set(part.slice(0, at).trim(), part.slice(at + 1).trim());
  }
  for (const name of CSRF_COOKIES) {
    if (cookies.has(name)) return cookies.get(name);
  }
  return null;
}

class ApiError extends Error {
  constructor(status, body, { retryAfter = null, challenge = null } = {}) {
    super(describeFailure(status, body, retryAfter, challenge));
    this.status = status;
    this.body = body;
  }
}

// RFC 9470: the session is signed in without a second factor, and this action needs one.
const STEP_UP_CHALLENGE = /\berror="insufficient_user_authentication"/;

/** Thrown after a 401: the session is gone and the sign-in page is already showing. */
class SessionEnded extends Error {}

function describeFailure(status, body, retryAfter, challenge) {
  if (status === 403 && challenge && STEP_UP_CHALLENGE.test(challenge)) {
    return (
      "Changing users needs a sign-in with your second factor: set up MFA in Account, " +
      "then sign in again."
    );
  }
  const lines = [];
  if (body && typeof body === "object") {
    if (typeof body.error === "string") {
      // OAuth2 errors of the login endpoint (RFC 6749 §5.2).
      if (body.error === "mfa_required") {
        lines.push("Enter the code from your authenticator app.");
      } else {
        lines.push(body.error_description || "The username or password is not valid.");
      }
    } else if (typeof body.detail === "string" || typeof body.title === "string") {
      lines.push(body.detail || body.title);
    }
    if (Array.isArray(body.errors)) {
      for (const error of body.errors) {
        if (!error || typeof error.msg !== "string") continue;
        const where = Array.isArray(error.loc) ? error.loc.filter((p) => p !== "body") : [];
        lines.push(where.length ? `${where.join(".")}: ${error.msg}` : error.msg);
      }
    }
  }
  if (status === 429 && retryAfter) lines.push(`Try again in ${retryAfter} s.`);
  if (!lines.length) lines.push(`The request failed (HTTP ${status}).`);
  return lines.join("\n");
}

function randomKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * One API call. ``json`` or ``form`` is the body; unsafe methods carry the CSRF token.
 * A 401 ends the console's session (unless ``expect401``: the sign-in call) and throws
 * SessionEnded; any other failure throws ApiError with the text to show.
 */
async function api(method, path, { json, form, headers = {}, expect401 = false } = {}) {
  const sent = { Accept: "application/json", ...headers };
  let body;
  if (json !== undefined) {
    sent["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = new URLSearchParams(form);
  }
  if (UNSAFE_METHODS.has(method)) {
    const token = csrfToken();
    if (token) sent["X-CSRF-Token"] = token;
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: sent,
      body,
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
    });
  } catch {
    throw new ApiError(0, { detail: "The server could not be reached. Try again." });
  }
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (response.status !== 204 && /[/+]json\b/.test(type)) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (response.status === 401 && !expect401) {
    sessionEnded();
    throw new SessionEnded("signed out");
  }
  if (!response.ok) {
    throw new ApiError(response.status, data, {
      retryAfter: response.headers.get("Retry-After"),
      challenge: response.headers.get("WWW-Authenticate"),
    });
  }
  return data;
}

/** A page size from the route (``limit=``, 1 to 100), or ``fallback``. */
function pageSize(params, fallback) {
  const value = Number(params.get("limit"));
  return Number.isInteger(value) && value >= 1 && value <= 100 ? String(value) : String(fallback);
}

function query(path, params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

// -- Who is signed in -----------------------------------------------------------------------

const ALL_PERMISSIONS = [
  "notes:read", "notes:write", "notes:read_all", "users:read", "users:write", "audit:read",
];
// What each built-in role grants (CONTRACT.md "Roles and permissions"). Only decides which
// pages the console offers; the server decides what may be done.
const ROLE_PERMISSIONS = {
  user: ["notes:read", "notes:write"],
  auditor: ["audit:read"],
  admin: ALL_PERMISSIONS,
};
const ROLES = Object.keys(ROLE_PERMISSIONS);

let me = null; // the signed-in user (GET /auth/me), or null
let returnTo = null; // where to go after signing in
// The CSRF cookie's value when the API last said its session is gone (401): no need to ask
// again until a sign-in sets a new one. Without any CSRF cookie there is no session at all.
let deadCookie = null;

function mayHaveSession() {
  const token = csrfToken();
  return token !== null && token !== deadCookie;
}

function can(permission) {
  if (!me || !Array.isArray(me.roles)) return false;
  return me.roles.some((role) => (ROLE_PERMISSIONS[role] || []).includes(permission));
}

async function loadMe() {
  try {
    me = await api("GET", "/auth/me", { expect401: true });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      me = null;
      deadCookie = csrfToken();
    } else {
      throw error;
    }
  }
  renderNav();
  return me;
}

/** The API answered 401: the session expired, was revoked or signed out elsewhere. */
function sessionEnded() {
  const wasSignedIn = me !== null;
  me = null;
  deadCookie = csrfToken();
  renderNav();
  const current = location.hash;
  if (current.startsWith("#/") && !isPublicPath(parseHash().path)) returnTo = current;
  if (wasSignedIn) {
    flash = { kind: "alert", text: "Your session has ended. Please sign in again." };
  }
  navigate("#/signin");
}

async function signOut() {
  try {
    await api("DELETE", "/auth/session", { expect401: true });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      showAlert(error.message);
      return;
    }
  }
  me = null;
  returnTo = null;
  renderNav();
  flash = { kind: "status", text: "You are signed out." };
  navigate("#/signin");
}

// -- Navigation -----------------------------------------------------------------------------

function renderNav() {
  const nav = document.getElementById("nav");
  if (!me) {
    nav.hidden = true;
    nav.replaceChildren();
    return;
  }
  const { path } = parseHash();
  const link = (href, text) =>
    h("li", {}, h("a", { href, "aria-current": href === `#${path}` ? "page" : null }, text));
  const items = [link("#/notes", "Notes"), link("#/notes/new", "New note")];
  if (can("users:read")) items.push(link("#/admin/users", "Users"));
  if (can("audit:read")) items.push(link("#/admin/audit", "Audit log"));
  items.push(link("#/account", "Account"));
  nav.replaceChildren(
    h("ul", {}, items),
    h(
      "div",
      { class: "who" },
      h("span", {}, "Signed in as ", h("strong", {}, me.username)),
      h("button", { type: "button", class: "secondary", onclick: () => signOut() }, "Sign out"),
    ),
  );
  nav.hidden = false;
}

function parseHash() {
  const raw = location.hash.startsWith("#") ? location.hash.slice(1) : "";
  const at = raw.indexOf("?");
  const path = at === -1 ? raw : raw.slice(0, at);
  const params = new URLSearchParams(at === -1 ? "" : raw.slice(at + 1));
  return { path, params };
}

function navigate(hash) {
  if (location.hash === hash) {
    route();
  } else {
    location.hash = hash;
  }
}

const UUID = "([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})";
// ``public``: no sign-in needed (and, signed in, the notes instead); ``anyone``: a public page
// that stays open when signed in; ``token``: a page a mail links to, whose ``token=`` leaves
// the address bar (and the history entry) before anything else happens.
const MAIL_LINK = { public: true, anyone: true, token: true };
const ROUTES = [
  { pattern: /^\/signin$/, page: pageSignIn, public: true },
  { pattern: /^\/register$/, page: pageRegister, public: true },
  { pattern: /^\/forgot-password$/, page: pageForgotPassword, public: true },
  { pattern: /^\/reset-password$/, page: pageResetPassword, ...MAIL_LINK },
  { pattern: /^\/verify-email$/, page: pageVerifyEmail, ...MAIL_LINK },
  { pattern: /^\/notes$/, page: pageNotes },
  { pattern: /^\/notes\/new$/, page: pageNoteNew },
  { pattern: new RegExp(`^/notes/${UUID}$`), page: pageNote },
  { pattern: new RegExp(`^/notes/${UUID}/edit$`), page: pageNoteEdit },
  { pattern: /^\/account$/, page: pageAccount },
  { pattern: /^\/admin\/users$/, page: pageUsers, permission: "users:read", wide: true },
  { pattern: /^\/admin\/audit$/, page: pageAudit, permission: "audit:read", wide: true },
];

function isPublicPath(path) {
  return ROUTES.some((r) => r.public && r.pattern.test(path));
}

let routing = Promise.resolve();

function route() {
  // One navigation at a time, in order: a fast second click never renders under a first.
  routing = routing.then(renderRoute, renderRoute);
  return routing;
}

async function renderRoute() {
  const { path, params } = parseHash();
  const matched = ROUTES.find((r) => r.pattern.test(path));
  // The token is kept in ``params`` for the page; such a route never redirects below.
  if (matched && matched.token && params.has("token")) history.replaceState(null, "", `#${path}`);
  const main = document.getElementById("main");
  const message = flash;
  flash = null;
  clearMessages();

  if (!me && mayHaveSession()) {
    try {
      await loadMe();
    } catch (error) {
      showAlert(error.message);
      return;
    }
  }
  if (!path.startsWith("/") || path === "/") {
    history.replaceState(null, "", me ? "#/notes" : "#/signin");
    return renderRoute();
  }
  if (matched && !matched.public && !me) {
    returnTo = location.hash;
    history.replaceState(null, "", "#/signin");
    return renderRoute();
  }
  if (matched && matched.public && !matched.anyone && me) {
    history.replaceState(null, "", "#/notes");
    return renderRoute();
  }
  renderNav();

  const view = h("div", { class: "page" });
  main.classList.toggle("wide", Boolean(matched && matched.wide)); // tables get the width
  main.replaceChildren(view);
  if (message) {
    if (message.kind === "alert") showAlert(message.text);
    else showStatus(message.text);
  }
  if (!matched) {
    view.append(heading("Page not found"), backToNotes());
  } else if (matched.permission && !can(matched.permission)) {
    view.append(heading("Not allowed"), h("p", {}, "Your account cannot open this page."));
  } else {
    const match = path.match(matched.pattern);
    try {
      await matched.page(view, { params, args: match.slice(1) });
    } catch (error) {
      if (error instanceof SessionEnded) return;
      view.replaceChildren(heading("Something went wrong"));
      showAlert(error.message);
    }
  }
  if (view.isConnected) {
    const title = view.querySelector("h1");
    document.title = title ? `${title.textContent} · bastion` : "bastion";
    if (title) title.focus({ preventScroll: false });
  }
}

/** Runs an action from a form or button; shows its failure (a 401 has already navigated). */
async function attempt(action) {
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof SessionEnded)) showAlert(error.message);
    return undefined;
  }
}

// -- Note HTML ------------------------------------------------------------------------------

const XHTML = "http://www.w3.org/1999/xhtml";
// The server's allow-list (bastion.security.sanitize), element by element.
const NOTE_ELEMENTS = new Map(
  Object.entries({
    a: ["href", "title"],
    abbr: ["title"],
    b: [], blockquote: [], br: [], code: [], del: [], em: [],
    h1: [], h2: [], h3: [], h4: [], h5: [], h6: [],
    hr: [], i: [], ins: [], kbd: [], li: [], mark: [],
    ol: ["start"],
    p: [], pre: [], q: [], s: [], small: [], span: [], strong: [], sub: [], sup: [],
    table: [], tbody: [], thead: [], tr: [],
    td: ["colspan", "rowspan"],
    th: ["colspan", "rowspan"],
    u: [], ul: [],
    img: ["src", "alt", "title", "width", "height"],
  }),
);
// Dropped with everything inside them; any other element outside the list is unwrapped
// (its text kept), as the server's sanitizer does.
const NOTE_DROPPED = new Set([
  "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "template",
  "noscript", "noembed", "noframes", "xmp", "plaintext", "textarea", "select", "option",
  "title", "head", "meta", "link", "base", "form", "input", "button", "canvas", "audio",
  "video", "source", "track", "portal", "dialog", "slot",
]);
const NUMERIC_ATTRIBUTES = new Set(["width", "height", "colspan", "rowspan", "start"]);
const LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const LINK_REL = "noopener noreferrer nofollow";
const MAX_NOTE_DEPTH = 64;

function parseInert(html) {
  const markup = notePolicy ? notePolicy.createHTML(html) : html;
  return new DOMParser().parseFromString(markup, "text/html");
}

/** A note's HTML as a fragment of freshly made, allow-listed elements and text. */
function renderNoteBody(html) {
  const fragment = document.createDocumentFragment();
  copyChildren(parseInert(String(html)).body, fragment, 0);
  return fragment;
}

function copyChildren(from, to, depth) {
  for (const node of from.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      to.append(document.createTextNode(node.data));
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      copyElement(node, to, depth);
    }
    // Comments, processing instructions and everything else: dropped.
  }
}

function copyElement(source, to, depth) {
  const name = source.localName;
  if (source.namespaceURI !== XHTML || NOTE_DROPPED.has(name)) return; // svg, math, script…
  const allowed = NOTE_ELEMENTS.get(name);
  if (!allowed || depth >= MAX_NOTE_DEPTH) {
    copyChildren(source, to, depth); // unwrapped: its content, not itself
    return;
  }
  if (name === "img") {
    to.append(noteImage(source));
    return;
  }
  let copy = document.createElement(name);
  for (const attribute of allowed) {
    const value = source.getAttribute(attribute);
    if (value === null) continue;
    if (attribute === "href") {
      const href = safeUrl(value, LINK_PROTOCOLS);
      if (href) copy.setAttribute("href", href);
    } else if (NUMERIC_ATTRIBUTES.has(attribute)) {
      if (/^\d{1,4}$/.test(value.trim())) copy.setAttribute(attribute, value.trim());
    } else {
      copy.setAttribute(attribute, value); // plain text: title
    }
  }
  if (name === "a") {
    if (copy.hasAttribute("href")) {
      copy.setAttribute("rel", LINK_REL);
      copy.setAttribute("referrerpolicy", "no-referrer");
    } else {
      copy = document.createElement("span"); // a link to nowhere safe is just its text
    }
  }
  copyChildren(source, copy, depth + 1);
  to.append(copy);
}

/** An image of this origin; any other (another host, a data: or javascript: URL) is shown
 * as its description only: no request leaves for it, and nothing tracks the reader. */
function noteImage(source) {
  const src = safeUrl(source.getAttribute("src") || "", new Set(["http:", "https:"]));
  const alt = source.getAttribute("alt") || "";
  if (!src || new URL(src).origin !== location.origin) {
    return h("span", { class: "image-placeholder" }, `[image${alt ? `: ${alt}` : ""}]`);
  }
  const image = h("img", { src, alt, loading: "lazy", referrerpolicy: "no-referrer" });
  for (const attribute of ["title", "width", "height"]) {
    const value = source.getAttribute(attribute);
    if (value === null) continue;
    if (attribute === "title") image.setAttribute("title", value);
    else if (/^\d{1,4}$/.test(value.trim())) image.setAttribute(attribute, value.trim());
  }
  return image;
}

/** ``value`` resolved against the page, when its scheme is one of ``protocols``; else null. */
function safeUrl(value, protocols) {
  let url;
  try {
    url = new URL(value, document.baseURI);
  } catch {
    return null;
  }
  return protocols.has(url.protocol) ? url.href : null;
}

// -- Pages: signing in ----------------------------------------------------------------------

/** POST /auth/session with ``fields`` (username, password, and on the second step ``otp`` or
 * ``recovery_code``), then the page the person wanted. */
async function signIn(fields) {
  await api("POST", "/auth/session", { form: fields, expect401: true });
  await loadMe();
  const target = returnTo && returnTo !== "#/signin" ? returnTo : "#/notes";
  returnTo = null;
  navigate(target);
}

function isMfaRequired(error) {
  return error instanceof ApiError && error.status === 401 && error.body?.error === "mfa_required";
}

async function pageSignIn(view) {
  const username = h("input", {
    name: "username", autocomplete: "username", required: true, autocapitalize: "none",
    spellcheck: "false",
  });
  const password = h("input", {
    name: "password", type: "password", autocomplete: "current-password", required: true,
  });
  const form = actionForm(
    { class: "stack narrow", "aria-labelledby": "page-heading" },
    [field("Username", username), field("Password", password)],
    "Sign in",
    async () => {
      // From here on the password is in this closure only: never in storage, nor in the page
      // while the second step shows.
      const credentials = { username: username.value, password: password.value };
      password.value = "";
      try {
        await signIn(credentials);
      } catch (error) {
        if (!isMfaRequired(error)) {
          password.focus();
          throw error;
        }
        const step = secondFactorStep(credentials, () => {
          step.replaceWith(form);
          password.focus();
        });
        clearMessages();
        form.replaceWith(step);
        step.querySelector("input:not([disabled])").focus();
      }
    },
  );
  view.append(
    heading("Sign in"),
    form,
    h("p", {}, h("a", { href: "#/forgot-password" }, "Forgot your password?")),
    h("p", {}, "No account yet? ", h("a", { href: "#/register" }, "Create one")),
  );
}

/** Sign-in's second step: the same username and password again, with a code from the
 * authenticator app or, switched to, a recovery code. ``startOver`` goes back to the first. */
function secondFactorStep(credentials, startOver) {
  const otp = codeInput();
  const recovery = h("input", {
    name: "recovery_code", autocomplete: "off", autocapitalize: "none", spellcheck: "false",
    required: true, maxlength: "64", disabled: true,
  });
  const otpField = field(CODE_LABEL, otp, "6 digits; the app shows a new code every 30 seconds.");
  const recoveryField = field(
    "Recovery code",
    recovery,
    "One of the codes you stored when you set up two-step sign-in. Each one works once.",
  );
  recoveryField.hidden = true;
  let useRecovery = false;
  const toggle = h("button", { type: "button", class: "link" }, "Use a recovery code instead");
  toggle.addEventListener("click", () => {
    useRecovery = !useRecovery;
    otpField.hidden = otp.disabled = useRecovery;
    recoveryField.hidden = recovery.disabled = !useRecovery;
    toggle.textContent = useRecovery
      ? "Use a code from your authenticator app instead"
      : "Use a recovery code instead";
    clearMessages();
    (useRecovery ? recovery : otp).focus();
  });
  const back = h("button", { type: "button", class: "link" }, "Start over");
  back.addEventListener("click", () => {
    clearMessages();
    startOver();
  });
  const titleId = uid("step");
  const form = actionForm(
    { class: "stack narrow", "aria-labelledby": titleId },
    [otpField, recoveryField],
    "Verify",
    async () => {
      const input = useRecovery ? recovery : otp;
      const code = input.value.trim();
      input.value = "";
      try {
        await signIn({ ...credentials, ...(useRecovery ? { recovery_code: code } : { otp: code }) });
      } catch (error) {
        input.focus();
        if (!(error instanceof ApiError && error.status === 400)) throw error;
        throw new Error(
          useRecovery
            ? "That recovery code is not valid, or it was used already."
            : "That code is not valid. Enter the code the app shows now.",
        );
      }
    },
  );
  return h(
    "div",
    { class: "second-factor" },
    h("h2", { id: titleId }, "Two-step sign-in"),
    h("p", {}, `The account ${credentials.username} asks for a second factor.`),
    form,
    h("p", { class: "actions" }, toggle, back),
  );
}

async function pageForgotPassword(view) {
  const email = h("input", { name: "email", type: "email", autocomplete: "email", required: true });
  const form = actionForm(
    { class: "stack narrow", "aria-labelledby": "page-heading" },
    [field("Email", email, "The address of your account.")],
    "Send the link",
    async () => {
      await api("POST", "/auth/password/forgot", { json: { email: email.value.trim() } });
      // The same answer whether or not an account has the address (the server's is, too).
      form.reset();
      showStatus("If an account has that address, a mail with a link is on its way.");
    },
  );
  view.append(
    heading("Forgot your password?"),
    h("p", {}, "We will mail you a link to set a new password. It works once, for a while."),
    form,
    h("p", {}, h("a", { href: "#/signin" }, "Back to sign in")),
  );
}

/** What a mail's link says when its token is missing or the server refused it. */
function badLink(what, again) {
  return [
    h("p", {}, `This ${what} link is not valid: it may have expired or been used already.`),
    h("p", {}, again),
  ];
}

async function pageResetPassword(view, { params }) {
  const token = params.get("token");
  const askAgain = h("a", { href: "#/forgot-password" }, "Ask for a new link");
  view.append(heading("Set a new password"));
  if (!token) {
    view.append(badLink("password-reset", askAgain));
    return;
  }
  const password = newPasswordPair(
    "At least 15 characters; spaces are fine. Not a common password.",
  );
  view.append(
    actionForm(
      { class: "stack narrow", "aria-labelledby": "page-heading" },
      password.fields,
      "Set new password",
      async () => {
        if (!password.confirmed()) return;
        try {
          await api("POST", "/auth/password/reset", {
            json: { token, new_password: password.value() },
          });
        } catch (error) {
          if (error instanceof ApiError && error.status === 400) {
            throw new Error("This link is not valid: it may have expired or been used already.");
          }
          throw error; // 422: the policy's reasons, field by field
        }
        // A reset signs in nowhere and ends every session, this browser's too.
        me = null;
        deadCookie = csrfToken();
        returnTo = null;
        flash = {
          kind: "status",
          text: "Your new password is set, and every session of your account was signed out. " +
            "Sign in with the new password.",
        };
        navigate("#/signin");
      },
    ),
    h("p", {}, "Link expired? ", askAgain),
  );
}

async function pageVerifyEmail(view, { params }) {
  const token = params.get("token");
  const onward = me
    ? h("a", { href: "#/account" }, "Go to your account")
    : h("a", { href: "#/signin" }, "Sign in");
  const again = me
    ? h("span", {}, "Send a new one from your ", h("a", { href: "#/account" }, "account"), ".")
    : h("span", {}, "Sign in and send a new one from your account. ", onward);
  if (!token) {
    view.append(heading("Verify your email"), badLink("verification", again));
    return;
  }
  try {
    await api("POST", "/auth/email/verify", { json: { token } });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 400)) throw error;
    view.append(heading("Email not verified"), badLink("verification", again));
    return;
  }
  if (me) me = { ...me, email_verified: true };
  view.append(heading("Email verified"), h("p", {}, "Your email address is verified."), onward);
}

async function pageRegister(view) {
  const username = h("input", {
    name: "username", autocomplete: "username", required: true, minlength: "3",
    maxlength: "32", autocapitalize: "none", spellcheck: "false",
  });
  const email = h("input", { name: "email", type: "email", autocomplete: "email", required: true });
  const password = h("input", {
    name: "password", type: "password", autocomplete: "new-password", required: true,
    minlength: "15", maxlength: "128",
  });
  const age = h("input", {
    name: "age", type: "number", min: "13", max: "130", step: "1", required: true,
    inputmode: "numeric",
  });
  const submit = h("button", { type: "submit" }, "Create account");
  const form = h(
    "form",
    { class: "stack narrow", "aria-labelledby": "page-heading" },
    field("Username", username, "3 to 32 characters: lower-case letters, digits, '.', '_' or '-'."),
    field("Email", email),
    field("Password", password, "At least 15 characters; spaces are fine. Not a common password."),
    field("Age", age),
    submit,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(
      submit,
      attempt(async () => {
        await api("POST", "/auth/register", {
          json: {
            username: username.value,
            email: email.value,
            password: password.value,
            age: Number(age.value),
          },
        });
        flash = { kind: "status", text: "Your account is ready." };
        await signIn({ username: username.value, password: password.value });
      }),
    );
  });
  view.append(
    heading("Create an account"),
    form,
    h("p", {}, "Have an account? ", h("a", { href: "#/signin" }, "Sign in")),
  );
}

// -- Pages: notes ---------------------------------------------------------------------------

function noteHash(note, suffix = "") {
  return `#/notes/${encodeURIComponent(note.id)}${suffix}`;
}

function sharingText(note) {
  if (me && note.owner_id !== me.id) return "Shared with you";
  if (note.shared_with.length) return `Shared with ${note.shared_with.join(", ")}`;
  return "Private";
}

async function pageNotes(view, { params }) {
  const q = params.get("q") || "";
  const all = params.get("all") === "true" && can("notes:read_all");
  const search = h("input", { type: "search", name: "q", value: q, maxlength: "200" });
  const parts = [field("Search notes", search)];
  let everyone = null;
  if (can("notes:read_all")) {
    everyone = h("input", { type: "checkbox", name: "all", id: uid("all"), checked: all });
    parts.push(
      h(
        "div",
        { class: "check" },
        everyone,
        h("label", { for: everyone.id }, "Every user's notes"),
      ),
    );
  }
  const form = h(
    "form",
    { role: "search", class: "inline-form" },
    parts,
    h("button", { type: "submit" }, "Search"),
    q || all ? h("a", { href: "#/notes", class: "button-link" }, "Clear") : null,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const all = everyone?.checked ? "true" : "";
    navigate(`#${query("/notes", { q: search.value.trim(), all })}`);
  });

  const list = h("ul", { class: "note-list", "aria-label": "Notes" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show more notes");
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  view.append(
    h(
      "div",
      { class: "title-row" },
      heading("Notes"),
      h("a", { href: "#/notes/new", class: "button-link primary" }, "New note"),
    ),
    form,
    summary,
    list,
    more,
  );

  let cursor = null;
  const load = async () => {
    const page = await api(
      "GET",
      query("/notes", { q, all: all ? "true" : "", cursor, limit: pageSize(params, 20) }),
    );
    for (const note of page.items) {
      list.append(
        h(
          "li",
          {},
          h("a", { href: noteHash(note), class: "note-title" }, note.title),
          h("span", { class: "meta" }, sharingText(note), " · changed ", when(note.updated_at)),
        ),
      );
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    const count = list.childElementCount;
    if (count === 0) summary.textContent = q ? `No notes match “${q}”.` : "No notes yet.";
    else summary.textContent = q ? `Notes matching “${q}”: ${count}${cursor ? "+" : ""}` : "";
  };
  more.addEventListener("click", () => busy(more, attempt(load)));
  await load();
}

async function pageNote(view, { args: [id] }) {
  let note;
  try {
    note = await api("GET", `/notes/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      view.append(heading("Note not found"), backToNotes());
      showAlert(error.message);
      return;
    }
    throw error;
  }
  const owned = me && note.owner_id === me.id;
  const title = heading(note.title);
  const sharing = h("p", { class: "meta" });
  const showSharing = () => {
    sharing.replaceChildren(sharingText(note), " · changed ", when(note.updated_at));
  };
  showSharing();
  const body = h("div", { class: "note-body" }, renderNoteBody(note.body));
  view.append(
    h("article", { class: "note", "aria-labelledby": "page-heading" }, title, sharing, body),
  );
  if (!owned) {
    view.append(backToNotes());
    return;
  }

  // Delete asks once more in the page (no dialog), then deletes.
  const confirmBox = h("div", {
    class: "confirm", hidden: true, role: "group", "aria-label": "Confirm deletion",
  });
  const deleteButton = h("button", { type: "button", class: "danger" }, "Delete");
  deleteButton.addEventListener("click", () => {
    confirmBox.hidden = false;
    confirmBox.querySelector("button").focus();
  });
  const reallyDelete = h("button", { type: "button", class: "danger" }, "Delete this note");
  const cancelDelete = h("button", { type: "button", class: "secondary" }, "Keep it");
  append(confirmBox, [h("p", {}, "Delete this note for good?"), reallyDelete, " ", cancelDelete]);
  cancelDelete.addEventListener("click", () => {
    confirmBox.hidden = true;
    deleteButton.focus();
  });
  reallyDelete.addEventListener("click", () =>
    busy(
      reallyDelete,
      attempt(async () => {
        await api("DELETE", `/notes/${encodeURIComponent(note.id)}`);
        flash = { kind: "status", text: `Deleted “${note.title}”.` };
        navigate("#/notes");
      }),
    ),
  );

  const shareName = h("input", {
    name: "username", autocomplete: "off", autocapitalize: "none", spellcheck: "false",
    required: true,
  });
  const shareButton = h("button", { type: "submit" }, "Share");
  const shareForm = h(
    "form",
    { class: "inline-form", "aria-label": "Share this note" },
    field("Share with (username)", shareName),
    shareButton,
  );
  shareForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const username = shareName.value.trim();
    busy(
      shareButton,
      attempt(async () => {
        note = await api("POST", `/notes/${encodeURIComponent(note.id)}/shares`, {
          json: { username },
          headers: { "Idempotency-Key": randomKey() },
        });
        showSharing();
        shareName.value = "";
        showStatus(`Shared with ${username}.`);
      }),
    );
  });

  view.append(
    h(
      "div",
      { class: "actions" },
      h("a", { href: noteHash(note, "/edit"), class: "button-link" }, "Edit"),
      deleteButton,
      h("a", { href: "#/notes" }, "Back to notes"),
    ),
    confirmBox,
    h(
      "section",
      { "aria-labelledby": "share-heading" },
      h("h2", { id: "share-heading" }, "Sharing"),
      shareForm,
    ),
  );
}

function noteForm(note, submitText, save) {
  const title = h("input", {
    name: "title", required: true, maxlength: "200", value: note ? note.title : "",
  });
  const body = h("textarea", { name: "body", rows: "14", spellcheck: "true" });
  body.value = note ? note.body : "";
  const submit = h("button", { type: "submit" }, submitText);
  const cancel = h(
    "a",
    { href: note ? noteHash(note) : "#/notes", class: "button-link secondary" },
    "Cancel",
  );
  const form = h(
    "form",
    { class: "stack", "aria-labelledby": "page-heading" },
    field("Title", title),
    field(
      "Body (HTML)",
      body,
      "Simple HTML is kept (paragraphs, emphasis, lists, tables, links); scripts, styles " +
        "and event handlers are removed when the note is saved.",
    ),
    h("div", { class: "actions" }, submit, cancel),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, attempt(() => save({ title: title.value, body: body.value })));
  });
  return form;
}

async function pageNoteNew(view) {
  // One key per form: a double submit or a retry after a lost answer creates one note.
  const key = randomKey();
  view.append(
    heading("New note"),
    noteForm(null, "Create note", async (fields) => {
      const note = await api("POST", "/notes", {
        json: fields,
        headers: { "Idempotency-Key": key },
      });
      flash = { kind: "status", text: "Note created." };
      navigate(noteHash(note));
    }),
  );
}

async function pageNoteEdit(view, { args: [id] }) {
  const note = await api("GET", `/notes/${encodeURIComponent(id)}`);
  view.append(
    heading("Edit note"),
    noteForm(note, "Save changes", async (fields) => {
      const changes = {};
      if (fields.title !== note.title) changes.title = fields.title;
      if (fields.body !== note.body) changes.body = fields.body;
      if (Object.keys(changes).length) {
        await api("PATCH", `/notes/${encodeURIComponent(note.id)}`, { json: changes });
        flash = { kind: "status", text: "Note saved." };
      }
      navigate(noteHash(note));
    }),
  );
}

// -- Pages: account -------------------------------------------------------------------------

async function pageAccount(view) {
  me = await api("GET", "/auth/me"); // fresh: roles may have changed
  renderNav();
  const details = h(
    "dl",
    { class: "details" },
    h("dt", {}, "Username"), h("dd", {}, me.username),
    h("dt", {}, "Email"),
    h(
      "dd",
      {},
      me.email,
      me.email_verified
        ? h("strong", { class: "tag" }, "Verified")
        : h("strong", { class: "tag plain" }, "Not verified"),
    ),
    h("dt", {}, "Roles"), h("dd", {}, me.roles.join(", ")),
    h("dt", {}, "Two-step sign-in"), h("dd", {}, me.mfa_enabled ? "On" : "Off"),
    h("dt", {}, "Member since"), h("dd", {}, when(me.created_at)),
  );

  const current = passwordInput();
  const next = newPasswordPair("At least 15 characters. Your other sessions are signed out.");
  const passwordForm = actionForm(
    { class: "stack narrow", "aria-labelledby": "password-heading" },
    [accountNameField(me.username), field("Current password", current), next.fields],
    "Change password",
    async () => {
      if (!next.confirmed()) return;
      await api("POST", "/auth/password", {
        json: { current_password: current.value, new_password: next.value() },
      });
      passwordForm.reset();
      showStatus("Password changed. Your other sessions were signed out.");
      await loadSessions(true);
    },
  );

  const sessionsBody = h("tbody");
  const moreSessions = h(
    "button",
    { type: "button", class: "secondary", hidden: true },
    "Show more sessions",
  );
  const sessionsTable = h(
    "table",
    { class: "data" },
    h("caption", { class: "visually-hidden" }, "Your sessions"),
    columns("Signed in", "Last used", "Address", "Device", "Kind", "Action"),
    sessionsBody,
  );
  let cursor = null;
  const loadSessions = async (fromStart) => {
    if (fromStart) {
      cursor = null;
      sessionsBody.replaceChildren();
    }
    const page = await api("GET", query("/auth/sessions", { cursor }));
    for (const session of page.items) sessionsBody.append(sessionRow(session));
    cursor = page.next_cursor;
    moreSessions.hidden = !cursor;
  };
  moreSessions.addEventListener("click", () =>
    busy(moreSessions, attempt(() => loadSessions(false))),
  );

  view.append(
    heading("Account"),
    details,
    me.email_verified ? null : emailSection(),
    h(
      "section",
      { "aria-labelledby": "password-heading" },
      h("h2", { id: "password-heading" }, "Change password"),
      passwordForm,
    ),
    secondFactorSection(),
    h(
      "section",
      { "aria-labelledby": "sessions-heading" },
      h("h2", { id: "sessions-heading" }, "Sessions"),
      h(
        "p",
        { class: "hint" },
        "Every place your account is signed in. Sign out any you do not recognise.",
      ),
      h("div", { class: "table-wrap" }, sessionsTable),
      moreSessions,
    ),
  );
  await loadSessions(true);
}

/** An unverified address, and the button that mails a link to verify it. */
function emailSection() {
  const send = actionButton({ class: "secondary" }, "Send verification mail", async () => {
    await api("POST", "/auth/email/verification");
    showStatus(`A mail with a link is on its way to ${me.email}. Open the link to verify it.`);
  });
  return h(
    "section",
    { "aria-labelledby": "email-heading" },
    h("h2", { id: "email-heading" }, "Email address"),
    h("p", {}, `Your address ${me.email} is not verified yet.`),
    send,
  );
}

/** Two-step sign-in (TOTP): set up when off; new recovery codes, or off, when on. */
function secondFactorSection() {
  const section = h("section", { "aria-labelledby": "mfa-heading" });
  const show = (...content) =>
    section.replaceChildren(h("h2", { id: "mfa-heading" }, "Two-step sign-in"), ...content);
  const showCodes = (codes, title) => show(recoveryCodesPanel(codes, title));

  if (!me.mfa_enabled) {
    const password = passwordInput();
    show(
      h(
        "p",
        {},
        "Off. With it on, signing in also asks for a code from an authenticator app on " +
          "your phone, so a stolen password alone is not enough.",
      ),
      actionForm(
        { class: "stack narrow", "aria-label": "Set up two-step sign-in" },
        [accountNameField(me.username), field("Your password", password)],
        "Set up two-step sign-in",
        async () => {
          const enrolment = await api("POST", "/auth/mfa/totp", {
            json: { password: password.value },
          });
          show(...enrolmentSteps(enrolment, (codes) => showCodes(codes, "Your recovery codes")));
        },
      ),
    );
    return section;
  }
  show(
    h("p", {}, "On: signing in asks for a code from your authenticator app."),
    h("h3", {}, "New recovery codes"),
    h("p", {}, "A new set of ten; the codes you have now stop working."),
    confirmedForm("Make new recovery codes", "secondary", async (proof) => {
      const answer = await api("POST", "/auth/mfa/recovery-codes", { json: proof });
      showCodes(answer.recovery_codes, "Your new recovery codes");
    }),
    h("h3", {}, "Turn off"),
    h("p", {}, "Signing in will ask for your password only."),
    confirmedForm("Turn off two-step sign-in", "danger", async (proof) => {
      await api("DELETE", "/auth/mfa/totp", { json: proof });
      flash = { kind: "status", text: "Two-step sign-in is off." };
      route();
    }),
  );
  return section;
}

/** A form named ``action`` that asks the password and a current code, and hands
 * ``{password, otp}`` to ``send``. */
function confirmedForm(action, buttonClass, send) {
  const password = passwordInput();
  const otp = codeInput();
  return actionForm(
    { class: "stack narrow", "aria-label": action },
    [accountNameField(me.username), field("Your password", password), field(CODE_LABEL, otp)],
    h("button", { type: "submit", class: buttonClass }, action),
    () => send({ password: password.value, otp: otp.value.trim() }),
  );
}

/** The base32 secret in groups of four, as authenticator apps ask for it when typed. */
function groupedSecret(secret) {
  return String(secret).replace(/\s+/g, "").match(/.{1,4}/g)?.join(" ") || "";
}

/** Setting up: the QR code (the server's data: URI), the same secret to type, and the
 * first code, whose confirmation turns MFA on; ``confirmed`` gets the recovery codes. */
function enrolmentSteps(enrolment, confirmed) {
  const qr =
    typeof enrolment.qr_code === "string" && enrolment.qr_code.startsWith("data:image/svg+xml")
      ? h("img", {
          src: enrolment.qr_code, class: "qr", width: "200", height: "200",
          alt: "QR code with the set-up key for your authenticator app",
        })
      : null;
  const otp = codeInput();
  const confirm = actionForm(
    { class: "stack narrow", "aria-label": "Confirm two-step sign-in" },
    [field(CODE_LABEL, otp)],
    "Turn on two-step sign-in",
    async () => {
      const answer = await api("POST", "/auth/mfa/totp/confirm", {
        json: { otp: otp.value.trim() },
      });
      me = { ...me, mfa_enabled: true };
      confirmed(answer.recovery_codes);
    },
  );
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  cancel.addEventListener("click", () => route());
  return [
    h(
      "ol",
      { class: "steps" },
      h(
        "li",
        {},
        h("p", {}, "Scan this QR code with your authenticator app:"),
        qr || h("p", { class: "hint" }, "(No QR code: type the key below.)"),
      ),
      h(
        "li",
        {},
        h("p", {}, "Or, if you cannot scan it, type this key into the app (a time-based key):"),
        h("p", {}, h("code", { class: "secret", "aria-label": "Set-up key" },
          groupedSecret(enrolment.secret))),
      ),
      h("li", {}, h("p", {}, "Enter the 6-digit code the app shows now:"), confirm),
    ),
    cancel,
  ];
}

/** Recovery codes, shown once: to copy, to download, and a plain warning. */
function recoveryCodesPanel(codes, title) {
  const text = `${codes.join("\n")}\n`;
  const copy = actionButton({ class: "secondary" }, "Copy the codes", async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      throw new Error("The codes could not be copied: select them and copy them by hand.");
    }
    showStatus("The recovery codes are copied.");
  });
  const download = h("button", { type: "button", class: "secondary" }, "Download as .txt");
  download.addEventListener("click", () => saveText("bastion-recovery-codes.txt", text));
  const done = h("button", { type: "button" }, "I have stored them");
  done.addEventListener("click", () => {
    flash = { kind: "status", text: "Two-step sign-in is on." };
    route();
  });
  const titleId = uid("codes");
  return h(
    "div",
    { class: "recovery-codes", role: "group", "aria-labelledby": titleId },
    h("h3", { id: titleId }, title),
    h(
      "p",
      { class: "warning" },
      h("strong", {}, "Store these now: they will not be shown again."),
      " Each one signs you in once, in place of a code from the app, should you lose it. " +
        "Keep them apart from your password (a password manager will do).",
    ),
    h("ol", { class: "codes" }, codes.map((code) => h("li", {}, h("code", {}, code)))),
    h("div", { class: "actions" }, copy, download, done),
  );
}

/** Offers ``text`` as a file download: a Blob behind a one-off link. */
function saveText(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000); // once the download has read it
}

function sessionRow(session) {
  const started = new Date(session.created_at).toLocaleString();
  const label = session.current
    ? "Sign out this session (this browser)"
    : `Sign out the session from ${session.client_ip || "an unknown address"}, started ${started}`;
  const button = h(
    "button",
    { type: "button", class: "secondary", "aria-label": label },
    "Sign out",
  );
  const row = h(
    "tr",
    { class: session.current ? "current" : null },
    h(
      "td",
      {},
      when(session.created_at),
      session.current ? h("strong", { class: "tag" }, "This browser") : null,
    ),
    h("td", {}, when(session.last_used_at)),
    h("td", {}, session.client_ip || "—"),
    h("td", { class: "wrap" }, session.user_agent || "—"),
    h("td", {}, session.kind || "—"),
    h("td", {}, button),
  );
  button.addEventListener("click", () =>
    busy(
      button,
      attempt(async () => {
        await api("DELETE", `/auth/sessions/${encodeURIComponent(session.id)}`);
        if (session.current) {
          me = null;
          renderNav();
          flash = { kind: "status", text: "You are signed out." };
          navigate("#/signin");
          return;
        }
        row.remove();
        showStatus("That session is signed out.");
      }),
    ),
  );
  return row;
}

// -- Pages: administration ------------------------------------------------------------------

function isLocked(user) {
  return Boolean(user.locked_until) && new Date(user.locked_until) > new Date();
}

async function pageUsers(view, { params }) {
  const body = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show more users");
  view.append(
    heading("Users"),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "data" },
        h("caption", { class: "visually-hidden" }, "Users"),
        columns("Username", "Email", "Roles", "State", "Two-step sign-in", "Actions"),
        body,
      ),
    ),
    more,
  );
  let cursor = null;
  const load = async () => {
    const page = await api("GET", query("/admin/users", { cursor, limit: pageSize(params, 50) }));
    for (const user of page.items) body.append(userRow(user));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener("click", () => busy(more, attempt(load)));
  await load();
}

/** Whether a user has MFA on, as the admin API says ("—" where it does not say). */
function twoStep(user) {
  if (typeof user.mfa_enabled !== "boolean") return "—";
  return user.mfa_enabled ? "On" : "Off";
}

function userRow(initial) {
  let user = initial;
  const row = h("tr", { "data-username": user.username });
  // Each change redraws the row; ``focus`` names the control that keeps the keyboard focus.
  const render = (focus = null) => {
    const name = user.username;
    const boxes = ROLES.map((role) => {
      const box = h("input", {
        type: "checkbox", id: uid("role"), value: role, checked: user.roles.includes(role),
      });
      return h("span", { class: "check" }, box, h("label", { for: box.id }, role));
    });
    const saveRoles = h(
      "button",
      {
        type: "submit",
        class: "secondary",
        "aria-label": `Save roles of ${name}`,
        "data-focus": "roles",
      },
      "Save roles",
    );
    const rolesForm = h(
      "form",
      { class: "roles" },
      h("fieldset", {}, h("legend", { class: "visually-hidden" }, `Roles of ${name}`), boxes),
      saveRoles,
    );
    rolesForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const roles = Array.from(rolesForm.querySelectorAll("input:checked"), (box) => box.value);
      busy(saveRoles, attempt(() => patch({ roles }, `Roles of ${name} saved.`, "roles")));
    });

    const state = [user.disabled ? h("strong", { class: "tag danger" }, "Disabled") : "Active"];
    if (isLocked(user)) state.push(" · locked until ", when(user.locked_until));
    const verb = user.disabled ? "Enable" : "Disable";
    const toggle = h(
      "button",
      {
        type: "button",
        class: user.disabled ? "secondary" : "danger",
        "aria-label": `${verb} ${name}`,
        "data-focus": "toggle",
      },
      verb,
    );
    toggle.addEventListener("click", () => {
      const done = `${name} is ${user.disabled ? "enabled" : "disabled"}.`;
      busy(toggle, attempt(() => patch({ disabled: !user.disabled }, done, "toggle")));
    });
    // Offered while the account is locked out (failed sign-ins); an admin may end it early.
    let unlock = null;
    if (isLocked(user)) {
      unlock = h(
        "button",
        { type: "button", class: "secondary", "aria-label": `Unlock ${name}` },
        "Unlock",
      );
      unlock.addEventListener("click", () =>
        busy(
          unlock,
          attempt(async () => {
            await api("POST", `/admin/users/${encodeURIComponent(user.id)}/unlock`);
            user = { ...user, locked_until: null };
            render("toggle");
            showStatus(`${name} is unlocked.`);
          }),
        ),
      );
    }
    row.replaceChildren(
      h("th", { scope: "row" }, name),
      h("td", { class: "wrap" }, user.email),
      h("td", {}, rolesForm),
      h("td", {}, state),
      h("td", {}, twoStep(user)),
      h("td", { class: "actions" }, toggle, " ", unlock),
    );
    if (focus) row.querySelector(`[data-focus="${focus}"]`)?.focus();
  };
  const patch = async (changes, done, focus) => {
    user = await api("PATCH", `/admin/users/${encodeURIComponent(user.id)}`, { json: changes });
    render(focus);
    showStatus(done);
  };
  render();
  return row;
}

// The server's audit event types (bastion.audit.events.AuditEventType; a serving test
// keeps the two lists equal): a name that is not one is a 422 from /admin/audit.
const AUDIT_TYPES = [
  "registration", "login_success", "login_failure", "lockout", "token_refresh", "refresh_reuse",
  "logout", "revocation", "password_change", "role_change", "disable", "unlock", "access_denied",
  "csrf_refusal", "mfa_challenge", "mfa_enabled", "mfa_disabled", "mfa_failure",
  "recovery_code_used", "recovery_codes_regenerated", "email_verification_requested",
  "email_verified", "password_reset_requested", "password_reset_completed",
];

/** An RFC 3339 instant as a datetime-local value in the reader's zone ("" if not one). */
function localInputValue(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  return `${day}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** A user id of an audit event, as a link that filters the log by it. */
function userFilterLink(id) {
  if (!id) return "—";
  const href = `#${query("/admin/audit", { user_id: id })}`;
  return h("a", { href, title: "Only this user's events" }, id);
}

async function pageAudit(view, { params }) {
  const filters = {
    type: params.get("type") || "",
    user_id: params.get("user_id") || "",
    since: params.get("since") || "",
  };
  const listId = uid("audit-types");
  const type = h("input", { name: "type", list: listId, value: filters.type, autocomplete: "off" });
  const userId = h("input", {
    name: "user_id", value: filters.user_id, autocomplete: "off", spellcheck: "false", size: "38",
  });
  const since = h("input", {
    name: "since", type: "datetime-local", value: localInputValue(filters.since),
  });
  const filtered = filters.type || filters.user_id || filters.since;
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "Filter the audit log" },
    field("Event type", type),
    h("datalist", { id: listId }, AUDIT_TYPES.map((name) => h("option", { value: name }))),
    field("User id", userId),
    field("Since", since),
    h("button", { type: "submit" }, "Apply filters"),
    filtered ? h("a", { href: "#/admin/audit", class: "button-link" }, "Clear") : null,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const sinceDate = since.value ? new Date(since.value) : null;
    navigate(
      `#${query("/admin/audit", {
        type: type.value.trim(),
        user_id: userId.value.trim(),
        since: sinceDate && !Number.isNaN(sinceDate.getTime()) ? sinceDate.toISOString() : "",
      })}`,
    );
  });

  const body = h("tbody");
  const more = h(
    "button",
    { type: "button", class: "secondary", hidden: true },
    "Show older events",
  );
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  view.append(
    heading("Audit log"),
    form,
    summary,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "data audit" },
        h("caption", { class: "visually-hidden" }, "Audit events, newest first"),
        columns(
          "#", "Time", "Type", "Outcome", "Actor", "Subject", "Address", "Request", "Details",
        ),
        body,
      ),
    ),
    more,
  );
  let cursor = null;
  const load = async () => {
    const limit = pageSize(params, 50);
    const page = await api("GET", query("/admin/audit", { ...filters, cursor, limit }));
    for (const event of page.items) {
      const details = Object.entries(event.details || {}).map(([key, value]) => {
        const text = typeof value === "string" ? value : JSON.stringify(value);
        return h("li", {}, h("span", { class: "key" }, key), " ", text);
      });
      body.append(
        h(
          "tr",
          {},
          h("td", {}, String(event.seq)),
          h("td", {}, when(event.occurred_at)),
          h("td", { class: "event-type" }, event.type),
          h("td", {}, event.outcome),
          h("td", { class: "mono" }, userFilterLink(event.actor_id)),
          h("td", { class: "mono" }, userFilterLink(event.subject_id)),
          h("td", {}, event.client_ip || "—"),
          h("td", { class: "mono" }, event.request_id || "—"),
          h("td", { class: "wrap mono" }, h("ul", { class: "pairs" }, details)),
        ),
      );
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    const shown = body.childElementCount;
    summary.textContent = shown ? `${shown}${cursor ? "+" : ""} events` : "No events match.";
  };
  more.addEventListener("click", () => busy(more, attempt(load)));
  await load();
}

// -- Start ----------------------------------------------------------------------------------

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault(); // the fragment is the router's, not an anchor
  document.getElementById("main").focus();
});
window.addEventListener("hashchange", () => route());
route();
