// What both screen pages (vnc.js, spice.js) do before their client speaks: ask the controller
// for a one-time ticket (a CSRF-checked POST) and make the console websocket's address with
// it; and the page's badge. The controller relays that websocket to the VM's display; the
// browser never sees the hypervisor's graphics port.
export const screen = document.getElementById("screen");
const badge = document.getElementById("console-state");

export function state(text, on) {
  badge.textContent = text;
  badge.className = "live " + (on ? "on" : "off");
}

export async function socket(kind) {
  const vm = screen.getAttribute("data-vm"), host = screen.getAttribute("data-host");
  const resp = await fetch("/ui/vms/" + encodeURIComponent(vm) + "/console/" + kind +
                           "?host=" + encodeURIComponent(host), {
    method: "POST", credentials: "same-origin",
    headers: {"X-CSRF-Token": screen.getAttribute("data-csrf")}
  });
  const body = await resp.json();
  if (!resp.ok) { throw new Error(body.error || ("HTTP " + resp.status)); }
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  return scheme + location.host + body.url + "?ticket=" + encodeURIComponent(body.ticket);
}
