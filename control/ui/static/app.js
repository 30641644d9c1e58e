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

  // Upload: the file is PUT as the request body; the bar follows the bytes sent.
  function setupUpload() {
    var drop = document.getElementById("drop");
    if (!drop) return;
    var input = document.getElementById("upload-file");
    var nameInput = document.getElementById("upload-name");
    var bar = document.getElementById("upload-progress");
    var status = document.getElementById("upload-status");
    function send(file) {
      var name = drop.dataset.prefix + (nameInput.value || file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("PUT", drop.dataset.upload + "?name=" + encodeURIComponent(name));
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
      bar.value = 0;
      status.textContent = "Uploading " + file.name + "…";
      drop.dataset.state = "uploading";
      xhr.upload.onprogress = function (ev) {
        if (ev.lengthComputable) bar.value = Math.floor(100 * ev.loaded / ev.total);
      };
      xhr.onload = function () {
        if (xhr.status === 201) {
          bar.value = 100;
          status.textContent = "Uploaded " + name + " (100%)";
          drop.dataset.state = "done";
          window.setTimeout(function () { window.location.reload(); }, 800);
        } else {
          status.textContent = "Upload failed (" + xhr.status + ")";
          drop.dataset.state = "failed";
        }
      };
      xhr.onerror = function () {
        status.textContent = "Upload failed: connection lost";
        drop.dataset.state = "failed";
      };
      xhr.send(file);
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
