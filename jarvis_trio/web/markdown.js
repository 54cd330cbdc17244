// Model output to safe DOM: Markdown (marked), sanitised (DOMPurify), code highlighted
// (highlight.js, a small language set). All three are vendored in ./vendor/ (see its
// README for versions and licences).
//
// Model output is untrusted. Three layers keep it inert:
// - HTML written by the model is never parsed as HTML: marked's html renderer escapes it,
//   so `<img src=x onerror=...>` or `<script>` shows as the text the model wrote.
// - Images are never loaded: `![alt](url)` becomes a link to the url, and DOMPurify
//   forbids <img> (and style, forms, media, SVG, MathML) in any case.
// - DOMPurify sanitises what marked produced (no event handlers, no javascript: URLs),
//   and the page's Content-Security-Policy allows no inline script and no remote load.
import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";
import hljs from "./vendor/highlight/core.min.js";
import bash from "./vendor/highlight/languages/bash.min.js";
import c from "./vendor/highlight/languages/c.min.js";
import cpp from "./vendor/highlight/languages/cpp.min.js";
import css from "./vendor/highlight/languages/css.min.js";
import diff from "./vendor/highlight/languages/diff.min.js";
import go from "./vendor/highlight/languages/go.min.js";
import java from "./vendor/highlight/languages/java.min.js";
import javascript from "./vendor/highlight/languages/javascript.min.js";
import json from "./vendor/highlight/languages/json.min.js";
import markdown from "./vendor/highlight/languages/markdown.min.js";
import plaintext from "./vendor/highlight/languages/plaintext.min.js";
import python from "./vendor/highlight/languages/python.min.js";
import rust from "./vendor/highlight/languages/rust.min.js";
import shell from "./vendor/highlight/languages/shell.min.js";
import sql from "./vendor/highlight/languages/sql.min.js";
import typescript from "./vendor/highlight/languages/typescript.min.js";
import xml from "./vendor/highlight/languages/xml.min.js";
import yaml from "./vendor/highlight/languages/yaml.min.js";

const LANGUAGES = {
  bash, c, cpp, css, diff, go, java, javascript, json, markdown, plaintext, python, rust,
  shell, sql, typescript, xml, yaml,
};
for (const [name, language] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, language);

const escapeHtml = (text) =>
  text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

const parser = new Marked({ gfm: true, breaks: false });
parser.use({
  tokenizer: {
    // Strikethrough only with `~~`: a single `~` ("~5 s", "word~ab12") stays text.
    del(src) {
      const match = /^~~(?=[^\s~])([\s\S]*?[^\s~])~~(?=[^~]|$)/.exec(src);
      if (!match) return undefined;
      return { type: "del", raw: match[0], text: match[1], tokens: this.lexer.inlineTokens(match[1]) };
    },
  },
  renderer: {
    html(token) {
      const text = escapeHtml(token.text);
      return token.block ? `<div class="raw-html">${text}</div>` : text;
    },
    image(token) {
      const label = escapeHtml(token.text || token.href);
      return `<a href="${escapeHtml(token.href)}" class="image-link">[image: ${label}]</a>`;
    },
  },
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["img", "style", "form", "button", "textarea", "select", "video", "audio",
    "source", "picture", "iframe", "object", "embed", "link", "meta", "base"],
  FORBID_ATTR: ["style", "id", "name", "srcset", "src", "action", "formaction"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  if (node.tagName === "INPUT") node.setAttribute("disabled", ""); // task-list boxes
});

const highlighted = new Map(); // "lang\0code" -> HTML; streaming re-renders hit it
const HIGHLIGHT_CACHE = 200;

function highlight(code, language) {
  const key = language + "\0" + code;
  let html = highlighted.get(key);
  if (html === undefined) {
    html = hljs.highlight(code, { language, ignoreIllegals: true }).value;
    if (highlighted.size >= HIGHLIGHT_CACHE) highlighted.delete(highlighted.keys().next().value);
    highlighted.set(key, html);
  }
  return html;
}

function decorateCode(pre) {
  const code = pre.querySelector("code");
  if (!code) return;
  const match = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
  const name = match ? match[1].toLowerCase() : "";
  const language = name && hljs.getLanguage(name) ? name : "";
  if (language) {
    // highlight.js escapes the code it is given: its output is text plus its own spans.
    code.innerHTML = highlight(code.textContent, language);
    code.classList.add("hljs");
  }
  const block = document.createElement("div");
  block.className = "code-block";
  const head = document.createElement("div");
  head.className = "code-head";
  const label = document.createElement("span");
  label.textContent = name || "text";
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "code-copy";
  copy.dataset.testid = "code-copy-button";
  copy.textContent = "Copy";
  head.append(label, copy);
  pre.replaceWith(block);
  block.append(head, pre);
}

/** The Markdown `source`, rendered, sanitised and highlighted, as a fragment. */
export function renderMarkdown(source) {
  const fragment = DOMPurify.sanitize(parser.parse(source), PURIFY);
  for (const pre of fragment.querySelectorAll("pre")) decorateCode(pre);
  return fragment;
}

/** Make `container`'s children those of `fragment`, touching only the blocks that
 * changed: while an answer streams that is its last block, so nothing above it flickers
 * and a selection or a focused copy button there survives. */
export function morph(container, fragment) {
  const next = Array.from(fragment.childNodes).filter(
    (node) => node.nodeType !== Node.TEXT_NODE || node.textContent.trim() !== "",
  );
  const old = Array.from(container.childNodes);
  next.forEach((node, i) => {
    if (i >= old.length) container.append(node);
    else if (!old[i].isEqualNode(node)) container.replaceChild(node, old[i]);
  });
  for (const extra of old.slice(next.length)) extra.remove();
}

/** Copy `text` to the clipboard; the fallback serves pages not in a secure context. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("the browser refused to copy");
}
