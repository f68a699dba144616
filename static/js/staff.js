/* Staff pages: keyboard shortcuts, the session-timeout warning, confirmations for destructive
 * forms, and keeping focus and screen readers informed when htmx polling updates a page.
 * Plain JavaScript, no framework; loaded with the CSP nonce by templates/base.html.
 * Everything here is an enhancement: without JavaScript the pages work (no live updates, no
 * confirmation dialogs, no shortcuts).
 */
(function () {
  "use strict";

  var body = document.body;

  // --- the session-timeout warning ------------------------------------------------------------
  // The server (accounts/middleware.py SessionPolicyMiddleware) says how long this session may
  // stay idle and how much of that is left at render time. Background polls never extend it, so
  // the client timer restarts only on a page load or a successful keepalive.

  function sessionWarning() {
    var idle = parseInt(body.dataset.idleSeconds || "", 10);
    var remaining = parseInt(body.dataset.idleRemaining || "", 10);
    var box = document.getElementById("session-warning");
    if (!idle || isNaN(remaining) || !box) return;
    var countdown = document.getElementById("session-countdown");
    var stay = document.getElementById("session-stay");
    // Warn a minute ahead, or halfway when the whole idle limit is two minutes or less.
    var lead = idle <= 120 ? idle / 2 : 60;
    var deadline = Date.now() + remaining * 1000;
    var previousFocus = null;

    function seconds(n) { return n + (n === 1 ? " second" : " seconds"); }

    function toLogin() {
      var next = window.location.pathname + window.location.search;
      window.location.assign(body.dataset.loginUrl + "?next=" + encodeURIComponent(next));
    }

    function show(left) {
      countdown.textContent = seconds(left);
      if (box.hidden) {
        previousFocus = document.activeElement;
        box.hidden = false;
        stay.focus();
      }
    }

    function hide() {
      box.hidden = true;
      if (previousFocus && previousFocus.focus) previousFocus.focus();
      previousFocus = null;
    }

    function tick() {
      var left = Math.ceil((deadline - Date.now()) / 1000);
      // A second's grace past the deadline so the server has certainly ended the session: the
      // login page then says it ended for inactivity.
      if (left <= -1) { toLogin(); return; }
      if (left <= lead) show(Math.max(left, 0));
    }

    stay.addEventListener("click", function () {
      // CSRF_COOKIE_HTTPONLY: the token comes from a form on the page (every staff page has the
      // Sign out form).
      var token = document.querySelector('input[name="csrfmiddlewaretoken"]');
      fetch(body.dataset.keepaliveUrl, {
        method: "POST",
        credentials: "same-origin",
        redirect: "manual",
        headers: { "X-CSRFToken": token ? token.value : "" }
      }).then(function (response) {
        if (response.status !== 204) { toLogin(); return; }
        deadline = Date.now() + idle * 1000;
        hide();
      }, toLogin);
    });
    window.setInterval(tick, 1000);
  }

  // --- confirmations for destructive forms ------------------------------------------------------

  function confirmations() {
    var dialog = document.getElementById("confirm-dialog");
    var pending = null;
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!form.dataset || !form.dataset.confirm || form.dataset.confirmed === "1") return;
      event.preventDefault();
      if (!dialog || typeof dialog.showModal !== "function") {
        if (window.confirm(form.dataset.confirm)) submit(form, event.submitter);
        return;
      }
      pending = { form: form, submitter: event.submitter };
      document.getElementById("confirm-text").textContent = form.dataset.confirm;
      dialog.showModal();
      document.getElementById("confirm-cancel").focus();  // the safe choice is the default
    }, true);
    if (!dialog) return;
    document.getElementById("confirm-cancel").addEventListener("click", function () { dialog.close(); });
    document.getElementById("confirm-ok").addEventListener("click", function () {
      var go = pending;
      pending = null;
      dialog.close();
      if (go) submit(go.form, go.submitter);
    });
    dialog.addEventListener("close", function () {
      if (pending && pending.submitter) pending.submitter.focus();
      pending = null;
    });
  }

  function submit(form, submitter) {
    form.dataset.confirmed = "1";
    if (form.requestSubmit) form.requestSubmit(submitter || undefined);
    else form.submit();
  }

  // --- keyboard shortcuts ------------------------------------------------------------------------

  function typing(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  function threadLinks() {
    return Array.prototype.slice.call(document.querySelectorAll("#inbox-list a.thread-link"));
  }

  function moveInInbox(step) {
    var links = threadLinks();
    if (!links.length) return false;
    var at = links.indexOf(document.activeElement);
    var next = at === -1 ? (step > 0 ? 0 : links.length - 1) : Math.min(Math.max(at + step, 0), links.length - 1);
    links[next].focus();
    return true;
  }

  function follow(selector) {
    var link = document.querySelector(selector);
    if (link) { window.location.assign(link.href); return true; }
    return false;
  }

  function openDialog(id) {
    var dialog = document.getElementById(id);
    if (dialog && typeof dialog.showModal === "function" && !dialog.open) { dialog.showModal(); return true; }
    return false;
  }

  function anyDialogOpen() {
    return document.querySelector("dialog[open]") !== null ||
      !(document.getElementById("session-warning") || { hidden: true }).hidden;
  }

  function shortcuts() {
    document.addEventListener("keydown", function (event) {
      var target = event.target;
      // Ctrl/Cmd+Enter sends the reply (or any form) from the textarea being typed in.
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.form &&
          target.tagName.toLowerCase() === "textarea") {
        event.preventDefault();
        if (target.form.requestSubmit) target.form.requestSubmit(); else target.form.submit();
        return;
      }
      if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
      if (typing(target) || anyDialogOpen()) return;
      var inbox = document.getElementById("inbox-list") !== null;
      var thread = document.getElementById("messages") !== null;
      var onRow = threadLinks().indexOf(document.activeElement) !== -1;
      var handled = false;
      switch (event.key) {
        case "?":
          handled = openDialog("kbd-help");
          break;
        case "j":
          handled = inbox ? moveInInbox(1) : thread && follow('a[rel="next"]');
          break;
        case "k":
          handled = inbox ? moveInInbox(-1) : thread && follow('a[rel="prev"]');
          break;
        case "ArrowDown":
        case "ArrowUp":
          // Arrows move between conversations only from a row (or from nowhere): elsewhere they scroll.
          if (inbox && (onRow || target === body)) handled = moveInInbox(event.key === "ArrowDown" ? 1 : -1);
          break;
        case "o":
          if (inbox) {
            var link = onRow ? document.activeElement : threadLinks()[0];
            if (link) { window.location.assign(link.href); handled = true; }
          }
          break;
        case "r":
          if (thread) {
            var reply = document.querySelector("#reply-form textarea");
            if (reply) { reply.focus(); handled = true; }
          }
          break;
        case "Escape":
          if (thread) handled = follow("#back-to-inbox");
          break;
      }
      if (handled) event.preventDefault();
    });
  }

  // --- live updates (htmx polling) --------------------------------------------------------------

  function liveUpdates() {
    var focusedHref = null;
    body.addEventListener("htmx:beforeSwap", function (event) {
      var active = document.activeElement;
      focusedHref = active && active.classList && active.classList.contains("thread-link") ? active.getAttribute("href") : null;
      if (event.detail.xhr && event.detail.xhr.status === 401) event.detail.shouldSwap = false;
    });
    body.addEventListener("htmx:afterSettle", function () {
      if (focusedHref) {  // the refreshed inbox keeps the row the person was on
        var again = threadLinks().filter(function (a) { return a.getAttribute("href") === focusedHref; })[0];
        if (again) again.focus();
        focusedHref = null;
      }
    });
    body.addEventListener("htmx:oobAfterSwap", function (event) {
      var target = event.detail.target;
      if (!target || target.id !== "messages") return;
      var empty = target.querySelector("li.empty");
      if (empty) empty.remove();
      var status = document.getElementById("messages-live");
      if (status) status.textContent = "New message in this conversation.";
    });
  }

  sessionWarning();
  confirmations();
  shortcuts();
  liveUpdates();
})();
