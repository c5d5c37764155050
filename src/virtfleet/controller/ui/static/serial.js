// The serial console page: ask the controller for a one-time ticket (a CSRF-checked POST),
// open the console websocket with it, show what the VM writes as text (never markup) and send
// the keys typed into the console. Debian's libjs-xterm ships only a CommonJS stub that a
// browser cannot load, so this is a plain text console: no cursor addressing, ANSI escapes
// are dropped, a carriage return is ignored.
(function () {
  "use strict";
  var pre = document.getElementById("serial");
  var badge = document.getElementById("console-state");
  if (!pre) { return; }
  var vm = pre.getAttribute("data-vm"), host = pre.getAttribute("data-host");
  var kind = pre.getAttribute("data-kind");
  var decoder = new TextDecoder("utf-8");
  var ESC = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r/g;
  var MAX = 200000;  // characters kept on the page
  function state(text, on) {
    badge.textContent = text;
    badge.className = "live " + (on ? "on" : "off");
  }
  var pending = "";  // an escape sequence cut by a chunk's end, kept for the next chunk
  function show(text) {
    text = pending + text;
    var cut = text.match(/\x1b[^A-Za-z]{0,16}$/);
    pending = cut ? cut[0] : "";
    if (cut) { text = text.slice(0, cut.index); }
    var all = pre.textContent + text.replace(ESC, "");
    pre.textContent = all.length > MAX ? all.slice(all.length - MAX) : all;
    pre.scrollTop = pre.scrollHeight;
  }
  var base = "/ui/vms/" + encodeURIComponent(vm) + "/console/" + kind;
  fetch(base + "?host=" + encodeURIComponent(host), {
    method: "POST", credentials: "same-origin",
    headers: {"X-CSRF-Token": pre.getAttribute("data-csrf")}
  }).then(function (resp) {
    return resp.json().then(function (body) {
      if (!resp.ok) { throw new Error(body.error || ("HTTP " + resp.status)); }
      return body;
    });
  }).then(function (body) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + body.url + "?ticket=" +
                           encodeURIComponent(body.ticket));
    ws.binaryType = "arraybuffer";
    ws.onopen = function () { state("connected", true); pre.focus(); };
    ws.onclose = function (e) { state("closed" + (e.reason ? ": " + e.reason : ""), false); };
    ws.onmessage = function (msg) {
      show(typeof msg.data === "string" ? msg.data
           : decoder.decode(new Uint8Array(msg.data), {stream: true}));
    };
    var keys = {Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b",
                ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C",
                ArrowLeft: "\x1b[D"};
    pre.addEventListener("keydown", function (e) {
      var out = keys[e.key];
      if (!out && e.ctrlKey && e.key.length === 1) {
        out = String.fromCharCode(e.key.toUpperCase().charCodeAt(0) - 64);
      } else if (!out && e.key.length === 1) {
        out = e.key;
      }
      if (out && ws.readyState === WebSocket.OPEN) {
        ws.send(new TextEncoder().encode(out));
        e.preventDefault();
      }
    });
  }).catch(function (err) { state("refused: " + err.message, false); });
})();
