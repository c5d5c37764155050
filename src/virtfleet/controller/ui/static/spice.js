// The SPICE page: spice-html5 (Debian's spice-html5 package, served under /ui/spice-html5/)
// speaks SPICE over console websockets (screen.js): one per SPICE channel (main, display,
// inputs, cursor, ...), each with the same ticket, each relayed by the controller.
import { SpiceMainConn } from "/ui/spice-html5/main.js";
import { socket, state } from "./screen.js";

let conn = null;
socket("spice").then((url) => {
  // A display with a password of its own (<graphics passwd=...>) refuses this empty one:
  // spice-html5 then says "Permission denied." (docs/ui.md)
  conn = new SpiceMainConn({
    uri: url, password: "", screen_id: "screen",
    onsuccess: () => state("connected", true),
    onerror: (e) => {
      state("closed: " + (e && e.message ? e.message : "lost"), false);
      if (conn) { conn.stop(); }
    },
  });
}).catch((err) => state("refused: " + err.message, false));
