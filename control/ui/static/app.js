// archipelago web UI: small progressive enhancements (the pages work as plain forms).
"use strict";
(function () {
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }
  // htmx requests carry the CSRF token too.
  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });
  // A live refresh never pulls the focus from under a keyboard user: while focus is in
  // the refreshed part, its update waits for the next round.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var a = document.activeElement;
    if (a && a !== document.body && e.detail.target.contains(a)) e.detail.shouldSwap = false;
  });

  // Upload: the file is PUT as the request body; the bar follows the bytes sent.
  function setupUpload() {
    var drop = document.getElementById("drop");
    if (!drop) return;
    var input = document.getElementById("upload-file");
    var nameInput = document.getElementById("upload-name");
    var bar = document.getElementById("upload-progress");
    var status = document.getElementById("upload-status");
    function finish(name, sent) {
      bar.value = 100;
      drop.dataset.sent = String(sent);
      status.textContent = "Uploaded " + name + " (100%)" +
        (drop.dataset.path === "hashmap" && sent === 0 ? ": already stored, nothing to send" : "");
      drop.dataset.state = "done";
      window.setTimeout(function () { window.location.reload(); }, 800);
    }
    function failed(why) {
      status.textContent = "Upload failed: " + why;
      drop.dataset.state = "failed";
    }
    // One request; the bar follows its bytes from `base` to `base + blob.size` of `total`.
    function put(method, url, blob, type, base, total) {
      return new Promise(function (resolve, reject) {
        var xhr = new XMLHttpRequest();
        xhr.open(method, url);
        xhr.setRequestHeader("X-CSRF-Token", csrf());
        xhr.setRequestHeader("Content-Type", type);
        xhr.upload.onprogress = function (ev) {
          if (ev.lengthComputable && total > 0) bar.value = Math.floor(100 * (base + ev.loaded) / total);
        };
        xhr.onload = function () { resolve(xhr); };
        xhr.onerror = function () { reject(new Error("connection lost")); };
        xhr.send(blob);
      });
    }
    function hex(buf) {
      return Array.prototype.map.call(new Uint8Array(buf), function (b) {
        return ("0" + b.toString(16)).slice(-2);
      }).join("");
    }
    // Pithos block ids: sha256 of each block with its trailing zero bytes stripped.
    async function blockHashes(file, bs) {
      var out = [];
      for (var off = 0; off < file.size || out.length === 0; off += bs) {
        var b = new Uint8Array(await file.slice(off, off + bs).arrayBuffer());
        var end = b.length;
        while (end > 0 && b[end - 1] === 0) end--;
        out.push(hex(await crypto.subtle.digest("SHA-256", b.subarray(0, end))));
        status.textContent = "Checking " + file.name + "… " + Math.floor(100 * Math.min(file.size, off + bs) / Math.max(1, file.size)) + "%";
      }
      return out;
    }
    // Large files: send the block list first; only blocks the store lacks are uploaded.
    async function sendHashmap(file, name, type) {
      var bs = parseInt(drop.dataset.blockSize, 10);
      var hashes = await blockHashes(file, bs);
      var url = drop.dataset.hashmap + "?name=" + encodeURIComponent(name);
      var doc = JSON.stringify({bytes: file.size, hashes: hashes});
      var sent = 0;
      for (var round = 0; round < 3; round++) {
        var r = await fetch(url, {method: "PUT", body: doc, credentials: "same-origin",
          headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf(), "X-Object-Content-Type": type}});
        if (r.status === 201) return finish(name, sent);
        if (r.status === 413 && round === 0) return sendPlain(file, name, type);  // list too long
        if (r.status !== 409) return failed("HTTP " + r.status);
        var missing = new Set((await r.json()).missing);
        var todo = [];
        hashes.forEach(function (h, i) { if (missing.has(h)) { todo.push(i); missing.delete(h); } });
        var total = todo.length * bs;
        status.textContent = "Uploading " + todo.length + " of " + hashes.length + " blocks…";
        for (var k = 0; k < todo.length; k++) {
          var blob = file.slice(todo[k] * bs, todo[k] * bs + bs);
          var x = await put("POST", drop.dataset.blocks, blob, "application/octet-stream", k * bs, total);
          if (x.status !== 202) return failed("HTTP " + x.status);
          sent += blob.size;
        }
      }
      failed("blocks still missing");
    }
    function send(file) {
      var name = drop.dataset.prefix + (nameInput.value || file.name);
      var type = file.type || "application/octet-stream";
      bar.value = 0;
      drop.dataset.state = "uploading";
      var bs = parseInt(drop.dataset.blockSize || "0", 10);
      if (bs > 0 && file.size >= bs && window.crypto && crypto.subtle) {
        drop.dataset.path = "hashmap";
        sendHashmap(file, name, type).catch(function (e) { failed(e.message); });
        return;
      }
      sendPlain(file, name, type);
    }
    // Small files (or no WebCrypto, or a block list over 1 MiB): one PUT of the bytes.
    function sendPlain(file, name, type) {
      drop.dataset.path = "plain";
      status.textContent = "Uploading " + file.name + "…";
      put("PUT", drop.dataset.upload + "?name=" + encodeURIComponent(name), file, type, 0, file.size)
        .then(function (xhr) {
          if (xhr.status === 201) finish(name, file.size); else failed("HTTP " + xhr.status);
        }, function (e) { failed(e.message); });
    }
    document.getElementById("upload-button").addEventListener("click", function () {
      if (input.files.length) send(input.files[0]);
      else status.textContent = "Choose a file first.";
    });
    drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
    drop.addEventListener("drop", function (e) {
      e.preventDefault();
      drop.classList.remove("over");
      if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
    });
  }

  // Server console: a websocket streams the serial log as it grows.
  function setupConsole() {
    var pre = document.getElementById("console");
    if (!pre || !pre.dataset.ws) return;
    var proto = window.location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(proto + window.location.host + pre.dataset.ws);
    var state = document.getElementById("console-state");
    ws.onmessage = function (e) {
      pre.textContent += e.data;
      pre.scrollTop = pre.scrollHeight;
    };
    ws.onopen = function () { if (state) state.textContent = "live"; };
    ws.onclose = function () { if (state) state.textContent = "closed (the server is not running)"; };
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupUpload();
    setupConsole();
  });
})();
