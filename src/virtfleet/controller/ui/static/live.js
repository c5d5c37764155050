// The console's live updates: the controller's events stream (/ui/events, the same bus as
// /api/v1/events, narrowed to what the signed-in user may see) applied to the page. A VM's
// state cells are found by their data-vm attribute ("host/name") and get the new state as
// text (never markup). The cell keeps the id of the event that changed it (data-event), so a
// change that came by event can be told from one that came with a reload.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-events");
  if (!url || !window.EventSource) { return; }
  var badge = document.getElementById("live");
  // url may already carry ?since=ID (the last event the page was rendered after)
  // the Operations page follows operations too
  var ops = document.getElementById("ops");
  var source = new EventSource(url + (url.indexOf("?") < 0 ? "?" : "&") +
                               "kind=vm.state&kind=host" + (ops ? "&kind=operation" : ""));
  // Closed as the page goes: a stream left open by a page the browser keeps (back/forward
  // cache) holds one of the six connections a browser allows per host, and the seventh
  // page then waits for one to free.
  window.addEventListener("pagehide", function () { source.close(); });
  source.onopen = function () { if (badge) { badge.className = "live on"; } };
  source.onerror = function () { if (badge) { badge.className = "live off"; } };
  source.addEventListener("vm.state", function (msg) {
    var e = JSON.parse(msg.data);
    var state = (e.data && e.data.state) || "unknown";
    var key = e.host + "/" + e.vm;
    var cells = document.querySelectorAll("[data-vm]");
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].getAttribute("data-vm") !== key) { continue; }
      var cell = cells[i].hasAttribute("data-state") ? cells[i]
        : cells[i].querySelector("[data-state]");
      if (!cell) { continue; }
      cell.textContent = state;
      cell.className = "st s-" + state.replace(/ /g, "-") + " changed";
      cell.setAttribute("data-event", msg.lastEventId || e.id || "");
      // the row's (or page's) buttons: each shows in the states its verb applies to
      var scope = cells[i].hasAttribute("data-state") ? document : cells[i];
      var buttons = scope.querySelectorAll("button[data-when]");
      for (var j = 0; j < buttons.length; j++) {
        buttons[j].hidden = buttons[j].getAttribute("data-when").split("|").indexOf(state) < 0;
      }
    }
  });
  function hostCell(e, state) {
    var cells = document.querySelectorAll("[data-host]");
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].getAttribute("data-host") === e.host) {
        cells[i].className = "h h-" + state;
      }
    }
  }
  // An operation event: the page's operations tables fetched again (htmx asks for them
  // alone), at most one fetch in flight; the fresh tables keep the id of the last event they
  // answer (data-event), so a change that came by event can be told from a reload.
  var waiting = null, fetching = false;
  function refresh() {
    if (fetching || waiting === null || !window.htmx) { return; }
    var mark = waiting;
    waiting = null;
    fetching = true;
    window.htmx.ajax("GET", "/ui/operations", {target: "#ops", swap: "outerHTML"})
      .then(function () {
        var fresh = document.getElementById("ops");
        if (fresh) { fresh.setAttribute("data-event", mark); }
      }, function () {})
      .then(function () { fetching = false; refresh(); });
  }
  if (ops) {
    ["operation.started", "operation.progress", "operation.ended", "operation.failed"]
      .forEach(function (kind) {
        source.addEventListener(kind, function (msg) {
          waiting = msg.lastEventId || JSON.parse(msg.data).id || "";
          refresh();
        });
      });
  }
  source.addEventListener("host.down", function (msg) { hostCell(JSON.parse(msg.data), "unreachable"); });
  source.addEventListener("host.up", function (msg) { hostCell(JSON.parse(msg.data), "ok"); });
  source.addEventListener("host.suspect", function (msg) { hostCell(JSON.parse(msg.data), "suspect"); });
})();
