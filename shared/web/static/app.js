/* Small helpers every page uses: the API call that shows errors at the field, form checks,
   autocomplete and dates (the charts are charts.js).  No framework and nothing fetched from outside. */
(function () {
  "use strict";

  var dataNode = document.getElementById("page-data");
  var PAGE = dataNode ? JSON.parse(dataNode.textContent || "{}") : {};
  var TZ = "Asia/Shanghai";

  function esc(value) {
    return String(value == null ? "" : value)
      .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  /* ------------------------------------------------------------------ API */

  function ApiError(status, message, fields) {
    this.status = status;
    this.message = message;
    this.fields = fields || [];
  }
  ApiError.prototype = Object.create(Error.prototype);

  var STATUS_MESSAGES = {
    400: "请求有误，请检查后重试",
    401: "登录已过期，请重新登录",
    403: "无权执行此操作",
    404: "未找到相关记录",
    409: "当前状态不允许此操作，请刷新后重试",
    413: "文件过大",
    422: "填写的内容有误，请按提示修改",
    429: "操作过于频繁，请稍后再试",
    500: "服务器内部错误，请稍后重试",
    502: "服务暂时不可用，请稍后重试",
    503: "服务暂时不可用，请稍后重试"
  };

  /* Calls a JSON API; ``url`` may be a path of this service or a full URL of another one. */
  function api(url, options) {
    options = options || {};
    var init = {
      method: options.method || "GET",
      credentials: "include",
      headers: { "Accept": "application/json", "Accept-Language": "zh-CN" }
    };
    if (options.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
    } else if (options.form) {
      init.body = options.form;
    }
    if (options.idempotencyKey) { init.headers["Idempotency-Key"] = options.idempotencyKey; }
    return fetch(url, init).then(function (response) {
      if (response.status === 204) { return null; }
      var type = response.headers.get("Content-Type") || "";
      var body = type.indexOf("json") >= 0 ? response.json().catch(function () { return null; }) : Promise.resolve(null);
      return body.then(function (data) {
        if (response.ok && options.page) { return pageOf(response, data); }
        if (response.ok) { return data; }
        if (response.status === 401 && !options.noRedirect && PAGE.login_url) {
          window.location.href = PAGE.login_url;
        }
        var fields = [];
        var message = STATUS_MESSAGES[response.status] || ("操作失败（" + response.status + "）");
        if (data && Array.isArray(data.detail)) {
          fields = data.detail.map(function (d) { return { field: d.field || "", message: d.message || "输入无效" }; });
        } else if (data && typeof data.detail === "string") {
          message = data.detail;
        }
        throw new ApiError(response.status, message, fields);
      });
    }, function () {
      throw new ApiError(0, "网络连接失败，请检查网络后重试", []);
    });
  }

  /* ------------------------------------------------------------------ field errors */

  function fieldBox(form, name) {
    if (!name) { return null; }
    var box = form.querySelector('[data-field="' + name + '"]');
    if (box) { return box; }
    // "accused.officers.0.name" falls back to its nearest named parent, "accused.officers".
    var parts = name.split(".");
    while (parts.length > 1) {
      parts.pop();
      box = form.querySelector('[data-field="' + parts.join(".") + '"]');
      if (box) { return box; }
    }
    return null;
  }

  function setFieldError(box, message) {
    if (!box) { return; }
    var slot = box.querySelector(".field-error");
    if (!slot) {
      slot = document.createElement("div");
      slot.className = "field-error";
      slot.setAttribute("role", "alert");
      box.appendChild(slot);
    }
    slot.textContent = message || "";
    box.classList.toggle("invalid", !!message);
    var input = box.querySelector("input, select, textarea");
    if (input) { input.setAttribute("aria-invalid", message ? "true" : "false"); }
  }

  function clearErrors(form) {
    $all(".field", form).forEach(function (box) { setFieldError(box, ""); });
    var alert = form.querySelector(".form-alert");
    if (alert) { alert.textContent = ""; }
  }

  /* Puts each message of an API error at its field; what has no field goes to the form's alert. */
  function showErrors(form, error) {
    var alert = form.querySelector(".form-alert");
    var loose = [];
    var first = null;
    (error.fields || []).forEach(function (item) {
      var box = fieldBox(form, item.field);
      if (box) {
        setFieldError(box, item.message);
        first = first || box;
      } else {
        loose.push(item.message);
      }
    });
    if (!error.fields || !error.fields.length) { loose.push(error.message); }
    else if (!first && !loose.length) { loose.push(error.message); }
    if (alert) { alert.textContent = loose.join("；"); }
    else if (loose.length) { toast(loose.join("；"), true); }
    var focus = first && first.querySelector("input, select, textarea");
    if (focus) { focus.focus(); }
    else if (alert && loose.length) { alert.scrollIntoView({ block: "nearest" }); }
  }

  /* ------------------------------------------------------------------ client-side checks */

  var MOBILE = /^1[3-9]\d{9}$/;
  var LANDLINE = /^0\d{2,3}-?\d{7,8}(-\d{1,6})?$/;
  var CHECKS = {
    phone: function (v) {
      var s = v.replace(/\s/g, "").replace(/－/g, "-").replace(/^(\+86|0086)/, "");
      return !s || MOBILE.test(s) || LANDLINE.test(s) ? "" : "电话号码格式不正确：手机为1开头的11位数字，座机为区号加号码，如0394-8888888";
    },
    badge: function (v) { return !v || /^[0-9A-Za-z]{4,16}$/.test(v) ? "" : "警号为4至16位数字或字母"; },
    idnumber: function (v) {
      if (!v) { return ""; }
      if (!/^\d{17}[\dXx]$/.test(v)) { return "身份证号应为18位，最后一位可以是X"; }
      var weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
      var codes = "10X98765432";
      var sum = 0;
      for (var i = 0; i < 17; i++) { sum += Number(v[i]) * weights[i]; }
      return codes[sum % 11] === v[17].toUpperCase() ? "" : "身份证号校验位不正确，请核对";
    },
    number: function (v) { return !v || /^[0-9A-Za-z\-]+$/.test(v) ? "" : "编号只能含数字、字母和连字符"; }
  };

  function checkField(input) {
    var box = input.closest(".field");
    if (!box) { return true; }
    var value = (input.value || "").trim();
    var message = "";
    if (input.type === "checkbox" || input.type === "radio") {
      var leader = input.type === "radio" ? box.querySelector('input[type="radio"][required]') : (input.required ? input : null);
      if (leader && !box.querySelector("input:checked")) { message = leader.dataset.requiredMessage || "请选择"; }
    } else if (input.required && !value) {
      message = input.dataset.requiredMessage || "必填项";
    } else if (value && input.dataset.check && CHECKS[input.dataset.check]) {
      message = CHECKS[input.dataset.check](value);
    } else if (value && input.minLength > 0 && value.length < input.minLength) {
      message = "至少" + input.minLength + "个字";
    } else if (value && input.type === "number" && input.min !== "" && Number(value) < Number(input.min)) {
      message = "不能小于" + input.min;
    } else if (value && input.type === "number" && input.max !== "" && Number(value) > Number(input.max)) {
      message = "不能大于" + input.max;
    }
    setFieldError(box, message);
    return !message;
  }

  /* Checks as the person types (after a field was left once) and on submit. */
  function liveValidate(form) {
    $all("input, select, textarea", form).forEach(function (input) {
      input.addEventListener("blur", function () { input.dataset.touched = "1"; checkField(input); });
      input.addEventListener("input", function () { if (input.dataset.touched) { checkField(input); } });
      input.addEventListener("change", function () { if (input.dataset.touched) { checkField(input); } });
    });
  }

  function validate(form) {
    var ok = true;
    var first = null;
    $all("input, select, textarea", form).forEach(function (input) {
      if (input.disabled || input.closest("[hidden]")) { return; }
      input.dataset.touched = "1";
      if (!checkField(input)) { ok = false; first = first || input; }
    });
    if (first) { first.focus(); }
    return ok;
  }

  /* ``send(form, event)`` on a submit of ``node`` (a form, or a container of forms drawn later),
     only once every field of the submitted form passes its checks; the page does not reload. */
  function onValidSubmit(node, send) {
    node.addEventListener("submit", function (event) {
      event.preventDefault();
      var form = event.target;
      clearErrors(form);
      if (!validate(form)) { return; }
      send(form, event);
    });
  }

  /* A segmented control (``.segmented``): marks the pressed button and hands it to ``pick``. */
  function segmented(group, pick) {
    group.addEventListener("click", function (event) {
      var button = event.target.closest("button");
      if (!button) { return; }
      $all("button", group).forEach(function (b) { b.setAttribute("aria-pressed", b === button ? "true" : "false"); });
      pick(button);
    });
  }

  /* ------------------------------------------------------------------ autocomplete */

  /* ``source(q)`` returns a promise of [{label, hint, value}]; ``onPick(item)`` is called on choice. */
  function autocomplete(input, source, onPick) {
    var wrap = input.parentNode;
    wrap.classList.add("ac");
    var list = document.createElement("ul");
    list.className = "ac-list";
    list.id = (input.id || "ac") + "-list";
    list.setAttribute("role", "listbox");
    list.hidden = true;
    wrap.appendChild(list);
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("autocomplete", "off");
    var items = [];
    var active = -1;
    var seq = 0;
    var timer = null;

    function close() { list.hidden = true; input.setAttribute("aria-expanded", "false"); active = -1; }
    function mark() {
      $all("li", list).forEach(function (li, i) { li.setAttribute("aria-selected", i === active ? "true" : "false"); });
      var current = list.children[active];
      if (current) { current.scrollIntoView({ block: "nearest" }); }
    }
    function pick(i) {
      var item = items[i];
      if (!item) { return; }
      input.value = item.value != null ? item.value : item.label;
      close();
      if (onPick) { onPick(item); }
      input.dispatchEvent(new Event("change", { bubbles: true }));
    }
    function render() {
      list.innerHTML = items.map(function (item, i) {
        return '<li role="option" id="' + list.id + "-" + i + '" data-i="' + i + '">' +
          "<span>" + esc(item.label) + "</span>" + (item.hint ? "<small>" + esc(item.hint) + "</small>" : "") + "</li>";
      }).join("");
      list.hidden = !items.length;
      input.setAttribute("aria-expanded", items.length ? "true" : "false");
      mark();
    }
    function lookup() {
      var q = input.value.trim();
      var mine = ++seq;
      if (!q) { items = []; render(); return; }
      Promise.resolve(source(q)).then(function (found) {
        if (mine !== seq) { return; }
        items = (found || []).slice(0, 12);
        active = items.length ? 0 : -1;
        render();
      }, function () { items = []; render(); });
    }
    input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(lookup, 120); });
    input.addEventListener("keydown", function (event) {
      if (list.hidden) {
        if (event.key === "ArrowDown") { lookup(); event.preventDefault(); }
        return;
      }
      if (event.key === "ArrowDown") { active = Math.min(items.length - 1, active + 1); mark(); event.preventDefault(); }
      else if (event.key === "ArrowUp") { active = Math.max(0, active - 1); mark(); event.preventDefault(); }
      else if (event.key === "Enter") { if (active >= 0) { pick(active); event.preventDefault(); } }
      else if (event.key === "Tab") { if (active >= 0 && input.value.trim()) { pick(active); } else { close(); } }
      else if (event.key === "Escape") { close(); event.preventDefault(); }
    });
    list.addEventListener("mousedown", function (event) {
      var li = event.target.closest("li");
      if (li) { pick(Number(li.dataset.i)); event.preventDefault(); }
    });
    input.addEventListener("blur", function () { setTimeout(close, 150); });
  }

  /* ------------------------------------------------------------------ formatting */

  function parts(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) { return null; }
    var out = {};
    new Intl.DateTimeFormat("zh-CN", {
      timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false
    }).formatToParts(d).forEach(function (p) { out[p.type] = p.value; });
    return out;
  }
  function date(iso) { var p = iso && parts(iso); return p ? p.year + "-" + p.month + "-" + p.day : ""; }
  function datetime(iso) { var p = iso && parts(iso); return p ? p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute : ""; }
  function cnDate(iso) { var p = iso && parts(iso); return p ? p.year + "年" + Number(p.month) + "月" + Number(p.day) + "日" : ""; }
  /* "2026-11-02T09:14" from a datetime-local input, as Beijing time with its offset. */
  function localToIso(value) { return value ? value + (value.length === 16 ? ":00" : "") + "+08:00" : null; }
  function nowLocal() {
    var p = parts(new Date().toISOString());
    return p.year + "-" + p.month + "-" + p.day + "T" + p.hour + ":" + p.minute;
  }
  function pct(value) { return value == null ? "—" : (Math.round(value * 1000) / 10).toFixed(1) + "%"; }

  var RATING_LABELS = { satisfied: "满意", basically_satisfied: "基本满意", unsatisfied: "不满意" };
  var STEP_LABELS = {
    reminder: "到期前提醒", due_today: "当日到期", chase: "催办", escalation: "督办", rebuke: "通报"
  };
  var STATUS = {
    received: ["已受理", "blue"], routed: ["已分派", "blue"], verifying: ["核查中", "orange"], reviewing: ["复核中", "purple"],
    concluded: ["已办结", "green"], answered: ["已答复", "green"], closed: ["已结案", ""], reopened: ["重新办理", "red"],
    reclassified: ["已转类", ""], open: ["待认领", "blue"], claimed: ["核查中", "orange"], in_review: ["复核中", "purple"],
    returned: ["已退回", ""], superseded: ["已改派", ""], withdrawn: ["已撤回", ""],
    pending: ["待审批", "orange"], approved: ["已批准", "green"], refused: ["未批准", "red"],
    pending_approval: ["待审核", "orange"], delivered: ["已发布", "green"]
  };
  function statusBadge(status) {
    var s = STATUS[status] || [status, ""];
    return '<span class="badge ' + s[1] + '">' + esc(s[0]) + "</span>";
  }

  /* One clock as a coloured chip: working days left and the ladder step it has reached. */
  function clockChip(clock) {
    if (clock.status === "stopped") {
      return '<span class="clock stopped" title="' + esc(clock.rule || "") + '">' + esc(clock.label) + "：已停止</span>";
    }
    var taken = clock.steps_taken || [];
    var step = taken.length ? taken[taken.length - 1] : "none";
    var left = clock.working_days_left;
    var text;
    if (left == null) { text = "期限 " + date(clock.due_at); }
    else if (left > 0) { text = "剩 <b>" + left + "</b> 个工作日"; }
    else if (left === 0) { text = "<b>今日到期</b>"; }
    else { text = "超期 <b>" + (-left) + "</b> 个工作日"; }
    var stepText = step !== "none" ? "·" + STEP_LABELS[step] : "";
    if (left != null && left < 0 && step === "none") { step = "chase"; }
    return '<span class="clock step-' + step + '" title="' + esc((clock.rule || "") + "（期限 " + datetime(clock.due_at) + "）") + '">' +
      esc(clock.label) + "：" + text + esc(stepText) + "</span>";
  }

  /* ------------------------------------------------------------------ toast */

  var toastTimer = null;
  function toast(message, error) {
    var node = $("#toast");
    if (!node) {
      node = document.createElement("div");
      node.id = "toast";
      node.setAttribute("role", "status");
      document.body.appendChild(node);
    }
    node.className = "toast" + (error ? " error" : "");
    node.textContent = message;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { node.hidden = true; }, 5000);
  }

  /* ------------------------------------------------------------------ access keys */

  /* Alt+letter goes to the field (or presses the button) marked accesskey="letter".  Browsers
     differ (Firefox wants Alt+Shift, some ignore it on a select), so the page does it itself. */
  document.addEventListener("keydown", function (event) {
    if (!event.altKey || event.ctrlKey || event.metaKey) { return; }
    var match = /^(?:Key([A-Z])|Digit([0-9]))$/.exec(event.code || "");
    if (!match) { return; }
    var key = (match[1] || match[2]).toLowerCase();
    var target = $all("[accesskey]").filter(function (el) {
      return el.getAttribute("accesskey").toLowerCase() === key && !el.disabled && !el.closest("[hidden]");
    })[0];
    if (!target) { return; }
    event.preventDefault();
    if (target.tagName === "BUTTON" || target.tagName === "A") { target.click(); }
    else { target.focus(); if (target.select && target.tagName === "INPUT") { target.select(); } }
  });

  /* ------------------------------------------------------------------ misc */

  function uuid() {
    if (window.crypto && window.crypto.randomUUID) { return window.crypto.randomUUID(); }
    return "k" + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function busy(button, on, text) {
    if (!button) { return; }
    if (on) { button.dataset.label = button.innerHTML; button.disabled = true; if (text) { button.textContent = text; } }
    else { button.disabled = false; if (button.dataset.label) { button.innerHTML = button.dataset.label; } }
  }

  /* A list's page (shared.pagination): its rows, the total and the next page's cursor, from the headers. */
  function pageOf(response, data) {
    var total = response.headers.get("X-Total-Count");
    // The offset-paged lists (shared.pagination's Page.window) name their next page only in the Link header.
    var offset = /[?&]offset=(\d+)[^>]*>;\s*rel="next"/.exec(response.headers.get("Link") || "");
    return { rows: data || [], total: total === null ? null : Number(total), next: response.headers.get("X-Next-Cursor") || "",
      nextOffset: offset ? Number(offset[1]) : null };
  }

  /* Pages through a list: 共 N 件, 上一页 / 下一页.  The cursors of the pages before are kept here, so
     上一页 returns to exactly the page seen.  options: url() (the list's address with its filters),
     render(rows, total), controls (the element for the buttons), noRedirect. */
  function pager(options) {
    var before = [], current = "", next = "";
    // A step is the query that reaches a page: "after=<cursor>", or "offset=<n>" on an offset-paged list.
    function show(step) {
      var url = options.url();
      if (step) { url += (url.indexOf("?") >= 0 ? "&" : "?") + step; }
      return api(url, { page: true, noRedirect: options.noRedirect }).then(function (page) {
        current = step;
        next = page.next ? "after=" + encodeURIComponent(page.next) : page.nextOffset !== null ? "offset=" + page.nextOffset : "";
        options.render(page.rows, page.total);
        var controls = options.controls;
        if (!controls) { return page; }
        var total = page.total === null ? "" : "共 " + page.total + " 件　";
        controls.innerHTML = '<span class="hint" data-testid="page-info">' + total + "第 " + (before.length + 1) + " 页</span> " +
          '<button type="button" class="btn btn-sm" data-page="prev"' + (before.length ? "" : " disabled") + ">上一页</button> " +
          '<button type="button" class="btn btn-sm" data-page="next"' + (next ? "" : " disabled") + ">下一页</button>";
        return page;
      });
    }
    if (options.controls) {
      options.controls.addEventListener("click", function (event) {
        var button = event.target.closest("[data-page]");
        if (!button || button.disabled) { return; }
        if (button.dataset.page === "next" && next) { before.push(current); show(next); }
        if (button.dataset.page === "prev" && before.length) { show(before.pop()); }
      });
    }
    return {
      first: function () { before = []; return show(""); },
      reload: function () { return show(current); }
    };
  }

  function query(params) {
    var out = [];
    Object.keys(params).forEach(function (key) {
      var value = params[key];
      if (value !== "" && value != null) { out.push(encodeURIComponent(key) + "=" + encodeURIComponent(value)); }
    });
    return out.length ? "?" + out.join("&") : "";
  }

  /* ------------------------------------------------------------------ sign-out */

  /* The header's sign-out button posts to intake.  From another service's page that form post
     would carry "Origin: null" (this site's referrer policy) and be refused as cross-site; a
     fetch names its origin.  Intake revokes the token at once in every service. */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form || !form.hasAttribute || !form.hasAttribute("data-logout")) { return; }
    event.preventDefault();
    var intake = (PAGE.urls && PAGE.urls.intake) || "";
    fetch(intake + "/api/v1/auth/logout", { method: "POST", credentials: "include" })
      .catch(function () { return null; })
      .then(function () { window.location.href = intake + "/login"; });
  });

  /* ------------------------------------------------------------------ the bell */

  /* The unread count of the signed-in person's notifications, from feedback (cross-origin, with
     the sign-in cookie); the 待办 page tells the bell to look again after reading an item. */
  function refreshBell() {
    var bell = $("[data-bell]");
    var feedback = PAGE.urls && PAGE.urls.feedback;
    if (!bell || !feedback) { return; }
    api(feedback + "/api/v1/notifications/summary", { noRedirect: true }).then(function (data) {
      var count = $("[data-bell-count]", bell);
      var unread = (data && data.unread) || 0;
      count.textContent = unread > 99 ? "99+" : String(unread);
      count.hidden = unread === 0;
      bell.title = unread ? "待办与通知：" + unread + " 条未读" : "待办与通知";
    }, function () { return null; });
  }
  refreshBell();

  window.SV = {
    page: PAGE, urls: PAGE.urls || {}, user: PAGE.user || null,
    esc: esc, $: $, $all: $all, api: api, ApiError: ApiError, pager: pager,
    showErrors: showErrors, clearErrors: clearErrors, setFieldError: setFieldError,
    liveValidate: liveValidate, validate: validate, onValidSubmit: onValidSubmit, checkField: checkField, checks: CHECKS,
    autocomplete: autocomplete, segmented: segmented, toast: toast, busy: busy, uuid: uuid, query: query,
    date: date, datetime: datetime, cnDate: cnDate, localToIso: localToIso, nowLocal: nowLocal, pct: pct,
    refreshBell: refreshBell,
    statusBadge: statusBadge, clockChip: clockChip, STEP_LABELS: STEP_LABELS, STATUS: STATUS, RATING_LABELS: RATING_LABELS
  };
})();
