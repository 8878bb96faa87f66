// The console's only script, for two things a page cannot do alone:
// - the overview's live part refreshes itself by asking for the one shared
//   snapshot (the server reads the database at most once per period for
//   every viewer, however many are open);
// - the login link that `run --sandbox` prints carries its token in the
//   URL's fragment (never sent to the server, never in a log or a
//   Referer): it is put into the form and submitted.
"use strict";
(function () {
  var live = document.getElementById("live");
  if (live && live.dataset.refresh) {
    var every = parseInt(live.dataset.every || "3000", 10);
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(live.dataset.refresh, { credentials: "same-origin", redirect: "manual" })
        .then(function (r) {
          if (r.type === "opaqueredirect" || r.status === 401) { location.href = "/console/login"; return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) { if (html !== null && html !== undefined) { live.innerHTML = html; } })
        .catch(function () {})
        .then(function () { busy = false; });
    }, every);
  }
  var login = document.getElementById("login");
  if (login && location.hash.indexOf("#token=") === 0) {
    var token = decodeURIComponent(location.hash.slice(7));
    history.replaceState(null, "", location.pathname);
    document.getElementById("token").value = token;
    login.submit();
  }
})();
