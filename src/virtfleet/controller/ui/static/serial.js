// The serial console page: ask the controller for a one-time ticket (a CSRF-checked POST),
// open the console websocket with it, and join it to an xterm.js terminal (xterm.js, from the
// npm package @xterm/xterm): what the VM writes is drawn as a terminal draws it (cursor
// addressing, colours, full-screen programs such as vi or top), never as markup; what is typed
// into the terminal goes to the VM's serial port.
(function () {
  "use strict";
  var box = document.getElementById("serial");
  var badge = document.getElementById("console-state");
  if (!box || typeof Terminal !== "function") { return; }
  var vm = box.getAttribute("data-vm"), host = box.getAttribute("data-host");
  var kind = box.getAttribute("data-kind");
  var term = new Terminal({rows: 40, cols: 100, scrollback: 5000, cursorBlink: true,
                           fontFamily: "monospace"});
  term.open(box);
  var encoder = new TextEncoder();
  function state(text, on) {
    badge.textContent = text;
    badge.className = "live " + (on ? "on" : "off");
  }
  var base = "/ui/vms/" + encodeURIComponent(vm) + "/console/" + kind;
  fetch(base + "?host=" + encodeURIComponent(host), {
    method: "POST", credentials: "same-origin",
    headers: {"X-CSRF-Token": box.getAttribute("data-csrf")}
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
    ws.onopen = function () { state("connected", true); term.focus(); };
    ws.onclose = function (e) { state("closed" + (e.reason ? ": " + e.reason : ""), false); };
    ws.onmessage = function (msg) {
      // bytes as the serial port gave them: xterm.js decodes UTF-8 across chunk ends itself
      term.write(typeof msg.data === "string" ? msg.data : new Uint8Array(msg.data));
    };
    term.onData(function (data) {
      if (ws.readyState === WebSocket.OPEN) { ws.send(encoder.encode(data)); }
    });
  }).catch(function (err) { state("refused: " + err.message, false); });
})();
