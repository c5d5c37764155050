// The SPICE page: ask the controller for a ticket (a CSRF-checked POST), then let spice-html5
// (Debian's spice-html5 package, served under /ui/spice-html5/) speak SPICE over the console
// websocket: one websocket per SPICE channel (main, display, inputs, cursor, ...), each with
// the same ticket, each relayed by the controller to the VM's display. The browser never sees
// the hypervisor's graphics port.
import { SpiceMainConn } from "/ui/spice-html5/main.js";

const screen = document.getElementById("screen");
const badge = document.getElementById("console-state");
function state(text, on) {
  badge.textContent = text;
  badge.className = "live " + (on ? "on" : "off");
}
const vm = screen.getAttribute("data-vm"), host = screen.getAttribute("data-host");
const base = "/ui/vms/" + encodeURIComponent(vm) + "/console/spice";
let conn = null;
fetch(base + "?host=" + encodeURIComponent(host), {
  method: "POST", credentials: "same-origin",
  headers: {"X-CSRF-Token": screen.getAttribute("data-csrf")}
}).then(async (resp) => {
  const body = await resp.json();
  if (!resp.ok) { throw new Error(body.error || ("HTTP " + resp.status)); }
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  // A display with a password of its own (<graphics passwd=...>) refuses this empty one:
  // spice-html5 then says "Permission denied." (docs/ui.md)
  conn = new SpiceMainConn({
    uri: scheme + location.host + body.url + "?ticket=" + encodeURIComponent(body.ticket),
    password: "", screen_id: "screen",
    onsuccess: () => state("connected", true),
    onerror: (e) => {
      state("closed: " + (e && e.message ? e.message : "lost"), false);
      if (conn) { conn.stop(); }
    },
  });
}).catch((err) => state("refused: " + err.message, false));
