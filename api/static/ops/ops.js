// The overview's live update: every few seconds, fetch the fragment and swap it in. No
// library; a failed fetch keeps the last view, and a lost session goes to the login.
(function () {
  var box = document.getElementById("live");
  if (!box) return;
  var every = parseInt(box.getAttribute("data-every"), 10) || 5000;
  function refresh() {
    fetch(box.getAttribute("data-live"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || r.status === 401 || r.status === 403) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null && html !== undefined) box.innerHTML = html; })
      .catch(function () {})
      .then(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
