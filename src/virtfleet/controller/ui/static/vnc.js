// The VNC page: ask the controller for a one-time ticket (a CSRF-checked POST), then let
// noVNC (Debian's novnc package, served under /ui/novnc/) speak RFB over the console
// websocket. The controller relays it to the VM's display; the browser never sees the
// hypervisor's graphics port.
import RFB from "/ui/novnc/core/rfb.js";

const screen = document.getElementById("screen");
const badge = document.getElementById("console-state");
function state(text, on) {
  badge.textContent = text;
  badge.className = "live " + (on ? "on" : "off");
}
const vm = screen.getAttribute("data-vm"), host = screen.getAttribute("data-host");
const base = "/ui/vms/" + encodeURIComponent(vm) + "/console/vnc";
fetch(base + "?host=" + encodeURIComponent(host), {
  method: "POST", credentials: "same-origin",
  headers: {"X-CSRF-Token": screen.getAttribute("data-csrf")}
}).then(async (resp) => {
  const body = await resp.json();
  if (!resp.ok) { throw new Error(body.error || ("HTTP " + resp.status)); }
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const rfb = new RFB(screen, scheme + location.host + body.url + "?ticket=" +
                      encodeURIComponent(body.ticket));
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => state("connected", true));
  rfb.addEventListener("disconnect", (e) => state(e.detail.clean ? "closed" : "closed: lost", false));
  rfb.addEventListener("credentialsrequired", () => state("the display wants a password", false));
}).catch((err) => state("refused: " + err.message, false));
