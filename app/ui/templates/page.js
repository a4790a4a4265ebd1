// The page at `/`: asks once for a viewer token, keeps it for this browser session, and
// shows the summary the server renders (GET v1/ui/summary). A refused token is forgotten
// and asked for again. Exports download with the token, through a blob.
"use strict";

const KEY = "gpucost.token";
const SUMMARY = "v1/ui/summary";
const form = document.getElementById("token-form");
const input = document.getElementById("token");
const message = document.getElementById("message");
const signedIn = document.getElementById("signed-in");
const summary = document.getElementById("summary");

function ask(text) {
  sessionStorage.removeItem(KEY);
  summary.replaceChildren();
  signedIn.hidden = true;
  form.hidden = false;
  message.textContent = text;
  input.value = "";
  input.focus();
}

function failed(text) {
  const paragraph = document.createElement("p");
  paragraph.className = "error";
  paragraph.textContent = text;
  summary.replaceChildren(paragraph);
}

function exportStatus(text) {
  const status = document.getElementById("export-status");
  if (status !== null) status.textContent = text;
}

async function reason(response) {
  try {
    const body = await response.json();
    return body.detail || body.error || response.statusText;
  } catch {
    return response.statusText;
  }
}

// The response to a GET with the stored token; null (and the token asked for again) when
// the service refuses the token.
async function authorised(url) {
  const token = sessionStorage.getItem(KEY);
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${token}` },
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403) {
    const detail = await reason(response);
    ask(`That token was refused (${detail}). Give a viewer token.`);
    return null;
  }
  if (!response.ok) {
    throw new Error(`${url.split("?")[0]} answered ${response.status}: ${await reason(response)}`);
  }
  return response;
}

async function show() {
  form.hidden = true;
  message.textContent = "";
  try {
    const response = await authorised(SUMMARY);
    if (response === null) return;
    // Rendered by the service, every value escaped there.
    summary.innerHTML = await response.text();
    signedIn.hidden = false;
  } catch (error) {
    signedIn.hidden = false;
    failed(`The summary could not be read: ${error.message}`);
  }
}

function fileName(response, fallback) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  return match ? match[1] : fallback;
}

async function download(link) {
  const response = await authorised(link.getAttribute("href"));
  if (response === null) return;
  const url = URL.createObjectURL(await response.blob());
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.download = fileName(response, link.dataset.export);
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!token) {
    message.textContent = "Give a viewer token (gpucost token create --role viewer).";
    return;
  }
  sessionStorage.setItem(KEY, token);
  input.value = "";
  show();
});

document.getElementById("forget").addEventListener("click", () => ask(""));

summary.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-export]");
  if (link === null) return;
  event.preventDefault();
  link.setAttribute("aria-busy", "true");
  exportStatus("");
  download(link)
    .catch((error) => exportStatus(`The export could not be downloaded: ${error.message}`))
    .finally(() => link.removeAttribute("aria-busy"));
});

if (sessionStorage.getItem(KEY)) {
  show();
} else {
  input.focus();
}
