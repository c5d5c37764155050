// The VNC page: noVNC (Debian's novnc package, served under /ui/novnc/) speaks RFB over the
// console websocket (screen.js).
import RFB from "/ui/novnc/core/rfb.js";
import { screen, socket, state } from "./screen.js";

socket("vnc").then((url) => {
  const rfb = new RFB(screen, url);
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => state("connected", true));
  rfb.addEventListener("disconnect", (e) => state(e.detail.clean ? "closed" : "closed: lost", false));
  rfb.addEventListener("credentialsrequired", () => state("the display wants a password", false));
}).catch((err) => state("refused: " + err.message, false));
