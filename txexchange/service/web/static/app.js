// exchangefeed live view: reads /api/events (Server-Sent Events) and draws what it says.
// No libraries, no build step.  The DOM stays bounded: table rows are created once and
// reused, extra rows are removed, and only the newest message is drawn per frame.
"use strict";

(function () {
  const DEPTH = 50; // levels a side asked of the server (drawn in the chart)
  const LEVELS_SHOWN = 12; // levels a side in the tables
  const OLD_AGE = 5; // seconds after which an age is flagged

  const $ = (id) => document.getElementById(id);
  let source = null;
  let selected = null; // {exchange, symbol}
  let latest = null; // newest message not drawn yet
  let framePending = false;
  let bookKeys = "";

  function setText(el, text) {
    const value = text == null ? "" : String(text);
    if (el.textContent !== value) el.textContent = value;
  }

  function setClass(el, name) {
    if (el.className !== name) el.className = name;
  }

  // exactly n rows of `cells` cells in tbody, reusing the ones already there
  function rows(tbody, n, cells) {
    while (tbody.rows.length > n) tbody.deleteRow(-1);
    while (tbody.rows.length < n) {
      const tr = tbody.insertRow(-1);
      for (let i = 0; i < cells; i++) tr.insertCell(-1);
    }
    return tbody.rows;
  }

  function age(seconds) {
    if (seconds == null) return "–";
    return seconds < 10 ? seconds.toFixed(2) + " s" : seconds.toFixed(0) + " s";
  }

  function connect() {
    if (source) source.close();
    let url = "/api/events?depth=" + DEPTH;
    if (selected) {
      url += "&exchange=" + encodeURIComponent(selected.exchange) +
        "&symbol=" + encodeURIComponent(selected.symbol);
    }
    source = new EventSource(url);
    source.onopen = () => setLink("live");
    source.onerror = () => setLink("reconnecting");
    source.onmessage = (ev) => {
      latest = JSON.parse(ev.data);
      if (!framePending) {
        framePending = true;
        requestAnimationFrame(frame);
      }
    };
  }

  function setLink(state) {
    const el = $("link");
    el.dataset.link = state;
    setText(el, "push channel: " + state);
  }

  function frame() {
    framePending = false;
    const msg = latest;
    latest = null;
    if (!msg) return;
    renderState(msg.state);
    const book = msg.book;
    if (book && !selected) selected = { exchange: book.exchange, symbol: book.symbol };
    renderBookChoice(msg.state);
    renderBook(book);
    renderTrades(book);
  }

  function renderState(state) {
    const status = $("status");
    status.dataset.status = state.status;
    setText(status, state.status);
    setText($("uptime"), state.uptime == null ? "" : "up " + Math.floor(state.uptime) + " s");
    const feeds = state.feeds;
    const trs = rows($("feeds").tBodies[0], feeds.length, 8);
    feeds.forEach((f, i) => {
      const c = trs[i].cells;
      trs[i].dataset.exchange = f.exchange;
      setText(c[0], f.exchange);
      setText(c[1], f.state);
      setClass(c[1], "state-" + f.state);
      setText(c[2], f.msg_rate == null ? "–" : f.msg_rate.toFixed(1));
      setText(c[3], f.messages);
      setText(c[4], f.reconnects);
      setText(c[5], f.integrity_failures);
      setText(c[6], age(f.age));
      setClass(c[6], "num" + (f.age != null && f.age > OLD_AGE ? " age-old" : ""));
      const synced = f.books.filter((b) => b.synced).length;
      setText(c[7], synced + "/" + f.books.length);
      for (let k = 2; k < 6; k++) setClass(c[k], "num");
      setClass(c[7], "num");
    });
    const books = [];
    feeds.forEach((f) => f.books.forEach((b) => books.push([f.exchange, b])));
    const brs = rows($("books").tBodies[0], books.length, 7);
    books.forEach(([exchange, b], i) => {
      const tr = brs[i];
      const c = tr.cells;
      tr.dataset.exchange = exchange;
      tr.dataset.symbol = b.symbol;
      setClass(tr, isSelected(exchange, b.symbol) ? "selected" : "");
      setText(c[0], exchange);
      setText(c[1], b.symbol);
      const st = b.synced ? "synced" : b.stale ? "stale" : "syncing";
      setText(c[2], st);
      setClass(c[2], "state-" + (b.synced ? "synced" : "stale"));
      setText(c[3], b.updates);
      setText(c[4], age(b.age));
      setText(c[5], b.best_bid ? b.best_bid[0] : "–");
      setText(c[6], b.best_ask ? b.best_ask[0] : "–");
      for (let k = 3; k < 7; k++) setClass(c[k], "num");
    });
  }

  function isSelected(exchange, symbol) {
    return selected != null && selected.exchange === exchange && selected.symbol === symbol;
  }

  function renderBookChoice(state) {
    const keys = [];
    state.feeds.forEach((f) => f.books.forEach((b) => keys.push(f.exchange + " " + b.symbol)));
    const select = $("book-select");
    const joined = keys.join("\n");
    if (joined !== bookKeys) {
      bookKeys = joined;
      while (select.options.length) select.remove(0);
      keys.forEach((k) => select.add(new Option(k, k)));
    }
    if (selected) {
      const want = selected.exchange + " " + selected.symbol;
      if (select.value !== want) select.value = want;
    }
  }

  function choose(exchange, symbol) {
    if (isSelected(exchange, symbol)) return;
    selected = { exchange, symbol };
    connect();
  }

  function cumulative(levels) {
    let total = 0;
    return levels.map(([p, a]) => {
      total += parseFloat(a);
      return [parseFloat(p), total];
    });
  }

  function renderBook(book) {
    const info = $("book-info");
    if (!book) {
      setText(info, "waiting for a book…");
      drawChart(null);
      return;
    }
    const state = book.synced ? "nonce " + book.nonce : "not shown: " + (book.stale || "syncing");
    setText(info, book.exchange + " " + book.symbol + " · " + state + " · age " + age(book.age));
    const bids = cumulative(book.bids);
    const asks = cumulative(book.asks);
    fillSide($("bids"), book.bids, bids, true);
    fillSide($("asks"), book.asks, asks, false);
    drawChart(book, bids, asks);
  }

  function fillSide(table, levels, cum, isBid) {
    const n = Math.min(levels.length, LEVELS_SHOWN);
    const trs = rows(table.tBodies[0], n, 3);
    for (let i = 0; i < n; i++) {
      const c = trs[i].cells;
      const price = isBid ? c[2] : c[0];
      const total = isBid ? c[0] : c[2];
      setText(price, levels[i][0]);
      setText(c[1], levels[i][1]);
      setText(total, cum[i][1].toPrecision(6));
      setClass(price, "num price");
      setClass(c[1], "num");
      setClass(total, "num");
    }
  }

  function drawChart(book, bids, asks) {
    const canvas = $("depth-chart");
    const ctx = canvas.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 800;
    const h = canvas.clientHeight || 300;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    const levels = book ? bids.length + asks.length : 0;
    canvas.dataset.levels = String(levels);
    if (!book || !levels) {
      canvas.dataset.nonce = "";
      ctx.fillStyle = "#7d8894";
      ctx.fillText(book ? "book not shown: " + (book.stale || "syncing") : "no book yet", 12, 20);
      return;
    }
    canvas.dataset.nonce = String(book.nonce);
    canvas.dataset.bestBid = book.bids.length ? book.bids[0][0] : "";
    canvas.dataset.bestAsk = book.asks.length ? book.asks[0][0] : "";
    const pad = { l: 56, r: 12, t: 12, b: 22 };
    const prices = bids.concat(asks).map((x) => x[0]);
    let lo = Math.min(...prices);
    let hi = Math.max(...prices);
    if (hi === lo) { lo -= 1; hi += 1; }
    const top = Math.max(bids.length ? bids[bids.length - 1][1] : 0,
      asks.length ? asks[asks.length - 1][1] : 0) * 1.05 || 1;
    const x = (p) => pad.l + (p - lo) / (hi - lo) * (w - pad.l - pad.r);
    const y = (c) => h - pad.b - c / top * (h - pad.t - pad.b);
    // grid and amount labels
    ctx.strokeStyle = "#27303a";
    ctx.fillStyle = "#7d8894";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    for (let i = 0; i <= 4; i++) {
      const c = top * i / 4;
      ctx.beginPath();
      ctx.moveTo(pad.l, Math.round(y(c)) + 0.5);
      ctx.lineTo(w - pad.r, Math.round(y(c)) + 0.5);
      ctx.stroke();
      ctx.fillText(c.toPrecision(3), pad.l - 6, y(c) + 4);
    }
    ctx.textAlign = "center";
    [lo, (lo + hi) / 2, hi].forEach((p, i) => {
      ctx.textAlign = ["left", "center", "right"][i];
      ctx.fillText(p.toPrecision(8), i === 0 ? pad.l : i === 2 ? w - pad.r : x(p), h - 6);
    });
    side(ctx, bids, x, y, "46,189,133");
    side(ctx, asks, x, y, "240,97,109");
  }

  // a cumulative step curve from the best price outwards, filled down to zero
  function side(ctx, cum, x, y, rgb) {
    if (!cum.length) return;
    ctx.beginPath();
    ctx.moveTo(x(cum[0][0]), y(0));
    let prev = 0;
    for (const [p, c] of cum) {
      ctx.lineTo(x(p), y(prev));
      ctx.lineTo(x(p), y(c));
      prev = c;
    }
    const last = cum[cum.length - 1][0];
    ctx.lineTo(x(last), y(0));
    ctx.closePath();
    ctx.fillStyle = "rgba(" + rgb + ",0.25)";
    ctx.fill();
    ctx.strokeStyle = "rgb(" + rgb + ")";
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }

  function renderTrades(book) {
    const trades = book ? book.trades : [];
    const trs = rows($("trades").tBodies[0], trades.length, 4);
    $("no-trades").hidden = trades.length > 0;
    trades.forEach((t, i) => {
      const c = trs[i].cells;
      trs[i].dataset.id = t.id;
      setText(c[0], new Date(t.timestamp).toISOString().slice(11, 23));
      setText(c[1], t.side || "");
      setClass(c[1], t.side ? "side-" + t.side : "");
      setText(c[2], t.price);
      setText(c[3], t.amount);
      setClass(c[2], "num");
      setClass(c[3], "num");
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("book-select").addEventListener("change", (ev) => {
      const [exchange, symbol] = ev.target.value.split(" ");
      choose(exchange, symbol);
    });
    $("books").tBodies[0].addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr");
      if (tr && tr.dataset.exchange) choose(tr.dataset.exchange, tr.dataset.symbol);
    });
    connect();
  });
})();
