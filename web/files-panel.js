// The Files panel: uploads (a button, or files dropped anywhere on the page) with a
// progress bar, and the desktop's download folder as a list to download from, both
// through control's file routes with the VNC token as the bearer (files.js builds the
// URLs and words). What the session may not do is greyed out with the reason.

import { describeFileError, fileUrl, formatBytes, listUrl, nameProblem, parseListing } from './files.js';
import { policyOf } from './params.js';

const $ = (id) => document.getElementById(id);

/** How many uploads the page remembers in `state.files.uploads` (the newest). */
const MAX_UPLOADS_KEPT = 32;

/**
 * Wires the panel. `params` is readParams()'s result, `files` the part of the page's
 * state this panel owns (shown on window.vncViewer), `ability()` the current
 * abilities (abilities.js), `changed()` is called when control refused file calls for
 * this desktop as a whole (a 409 or 404) or did not answer, so the page re-renders.
 * Returns `{render, refresh}`.
 */
export function setUpFiles({ params, files, ability, changed }) {
  const url = (name) => fileUrl(params.control, params.containerId, name);
  const auth = { Authorization: `Bearer ${params.token}` };
  let queue = Promise.resolve();
  // Listing again is worth a try whenever the token may list: control may answer now.
  const mayList = () => Boolean(params.control) && policyOf(params.claims).download;

  function render() {
    const can = ability();
    const up = $('upload-button');
    up.disabled = !can.upload.ok;
    up.title = can.upload.ok ? 'upload files to the desktop\'s ~/Uploads (or drop them on the page)' : can.upload.reason;
    $('upload-reason').textContent = can.upload.ok ? '' : `Upload: ${can.upload.reason}`;
    const refresh = $('files-refresh');
    refresh.disabled = !mayList();
    refresh.title = mayList() ? 'list the desktop\'s ~/Downloads again' : can.download.reason;
    $('download-reason').textContent = can.download.ok ? '' : `Download: ${can.download.reason}`;
    $('files-toggle').classList.toggle('off', !can.upload.ok && !can.download.ok);
    renderList(can.download);
  }

  function renderList(can) {
    const list = $('files-list');
    list.replaceChildren(
      ...files.list.map((f) => {
        const li = document.createElement('li');
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'download';
        button.dataset.name = f.name;
        button.textContent = f.name;
        button.disabled = !can.ok;
        button.title = can.ok ? `download ${f.name}` : can.reason;
        button.addEventListener('click', () => download(f.name));
        const size = document.createElement('span');
        size.className = 'dim';
        size.textContent = formatBytes(f.size);
        li.append(button, size);
        return li;
      }),
    );
    let note = '';
    if (files.listError) note = files.listError;
    else if (files.listed && files.list.length === 0) note = 'nothing in ~/Downloads yet';
    else if (files.more) note = 'and more (control lists the first 1000)';
    $('files-note').textContent = note;
  }

  /** Lists the download folder; a refusal of the whole desktop greys the panel. */
  async function refresh() {
    if (!mayList()) return;
    let status = 0;
    let body = '';
    try {
      const resp = await fetch(listUrl(params.control, params.containerId), { headers: auth });
      status = resp.status;
      body = await resp.text();
    } catch {
      status = 0;
    }
    const unreachable = files.unreachable;
    files.unreachable = status === 0 ? describeFileError(0, '', 'the listing') : '';
    if (files.unreachable !== unreachable) changed();
    if (status === 200) {
      if (files.refusal) {
        files.refusal = '';
        changed();
      }
      const listing = parseListing(body);
      files.list = listing?.files ?? [];
      files.more = listing?.more ?? false;
      files.listError = listing ? '' : 'control sent a listing the page can\'t read';
      files.listed = true;
    } else {
      files.listError = describeFileError(status, body, 'the listing');
      // Refusals of the desktop as a whole: uploads would get the same answer.
      if (status === 404 || status === 409) {
        files.refusal = files.listError;
        changed();
      }
    }
    render();
  }

  /**
   * Probes control once at start: learns the list, or why files can't move for this
   * desktop at all. Control answers the desktop-wide refusals (no such container, the
   * static runtime, not running) before the token's policy (403), so a token that may
   * not list learns them too.
   */
  async function probe() {
    if (!params.control) return;
    if (mayList()) {
      await refresh();
      return;
    }
    try {
      const resp = await fetch(listUrl(params.control, params.containerId), { headers: auth });
      if (resp.status === 404 || resp.status === 409) {
        files.refusal = describeFileError(resp.status, await resp.text(), 'the listing');
        changed();
      }
    } catch {
      files.unreachable = describeFileError(0, '', 'the listing');
      changed();
    }
  }

  function upload(list) {
    for (const file of list) {
      const entry = { name: file.name, size: file.size, loaded: 0, state: 'queued', status: null, error: '' };
      files.uploads.push(entry);
      if (files.uploads.length > MAX_UPLOADS_KEPT) files.uploads.shift();
      queue = queue.then(() => send(file, entry));
    }
    showProgress();
  }

  /** One upload: PUT with progress; resolves when it ended, well or not. */
  function send(file, entry) {
    const problem = nameProblem(file.name);
    const can = ability().upload;
    if (problem || !can.ok) {
      finish(entry, null, problem || can.reason);
      return Promise.resolve();
    }
    entry.state = 'sending';
    showProgress(entry);
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', url(file.name));
      xhr.setRequestHeader('Authorization', auth.Authorization);
      xhr.upload.addEventListener('progress', (e) => {
        files.progressEvents += 1;
        entry.loaded = e.loaded;
        showProgress(entry);
      });
      xhr.addEventListener('load', () => {
        const ok = xhr.status === 201;
        if (ok) entry.loaded = file.size;
        finish(entry, xhr.status, ok ? '' : describeFileError(xhr.status, xhr.responseText, 'the upload'));
        resolve();
      });
      const failed = () => {
        finish(entry, 0, describeFileError(0, '', 'the upload'));
        resolve();
      };
      xhr.addEventListener('error', failed);
      xhr.addEventListener('abort', failed);
      xhr.send(file);
    });
  }

  function finish(entry, status, error) {
    entry.state = error ? 'failed' : 'done';
    entry.status = status;
    entry.error = error;
    files.lastUpload = { ...entry };
    const result = $('upload-result');
    result.dataset.state = entry.state;
    result.textContent = error
      ? `${entry.name}: upload failed: ${error}`
      : `${entry.name} (${formatBytes(entry.size)}) is in ~/Uploads`;
    if (error) $('files-panel').hidden = false;
    showProgress();
  }

  function showProgress(entry) {
    const sending = entry ?? files.uploads.find((u) => u.state === 'sending');
    $('upload-progress').hidden = !sending;
    if (!sending) return;
    const bar = $('upload-bar');
    bar.max = Math.max(sending.size, 1);
    bar.value = sending.loaded;
    const pct = sending.size ? Math.floor((100 * sending.loaded) / sending.size) : 100;
    $('upload-text').textContent = `${sending.name}: ${pct} % of ${formatBytes(sending.size)}`;
  }

  /** Downloads one file with the bearer and saves it through a blob URL. */
  async function download(name) {
    let status = 0;
    let error = '';
    let size = 0;
    try {
      const resp = await fetch(url(name), { headers: auth });
      status = resp.status;
      if (status === 200) {
        const blob = await resp.blob();
        size = blob.size;
        const href = URL.createObjectURL(blob);
        const a = document.createElement('a');
        a.href = href;
        a.download = name;
        document.body.append(a);
        a.click();
        a.remove();
        // The save has started from the blob by now; a minute is plenty for it.
        setTimeout(() => URL.revokeObjectURL(href), 60_000);
      } else {
        error = describeFileError(status, await resp.text(), 'the download');
      }
    } catch {
      error = describeFileError(status, '', 'the download');
    }
    files.lastDownload = { name, size, status, error };
    $('files-note').textContent = error ? `${name}: download failed: ${error}` : `${name} downloaded (${formatBytes(size)})`;
  }

  $('files-toggle').addEventListener('click', () => {
    const panel = $('files-panel');
    panel.hidden = !panel.hidden;
    if (!panel.hidden) refresh();
  });
  $('upload-button').addEventListener('click', () => $('upload-input').click());
  $('upload-input').addEventListener('change', (e) => {
    upload([...e.target.files]);
    e.target.value = '';
  });
  $('files-refresh').addEventListener('click', refresh);
  bindDrop(upload, ability, files);
  render();
  probe();
  return { render, refresh };
}

/** Files dragged over the page: a hint while over it, an upload (or the reason not) on drop. */
function bindDrop(upload, ability, files) {
  const zone = $('drop-zone');
  const carriesFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
  window.addEventListener('dragover', (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    const can = ability().upload;
    e.dataTransfer.dropEffect = can.ok ? 'copy' : 'none';
    zone.textContent = can.ok ? 'Drop to upload to the desktop\'s ~/Uploads' : `Can't upload: ${can.reason}`;
    zone.classList.toggle('off', !can.ok);
    zone.hidden = false;
  });
  window.addEventListener('dragleave', (e) => {
    if (e.relatedTarget === null) zone.hidden = true;
  });
  window.addEventListener('drop', (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    zone.hidden = true;
    files.drops += 1;
    const can = ability().upload;
    if (!can.ok) {
      $('upload-result').dataset.state = 'failed';
      $('upload-result').textContent = `Can't upload: ${can.reason}`;
      $('files-panel').hidden = false;
      return;
    }
    upload([...e.dataTransfer.files]);
  });
}
