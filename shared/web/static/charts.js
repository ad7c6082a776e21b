/* The charts of the pages that have any, drawn by the vendored Apache ECharts
   (static/vendor/echarts.min.js, loaded before this file).  SV.chart keeps the shape the pages
   call: line, bar and stacked take {labels, series: [{name, values, color}]}, map takes
   {map, values: [{name, value}], name, unit}; each draws into the node it is given, again and
   again on the same node as the figures change.  Every chart has tooltips and a 保存为图片
   button that saves a PNG. */
(function () {
  "use strict";
  if (!window.SV || !window.echarts) { return; }
  var echarts = window.echarts;
  var esc = SV.esc;
  var PALETTE = ["#1451a8", "#d0342c", "#1e7d3a", "#d9730d", "#6b2fa0", "#0f8b8d", "#8e6c12", "#5b6b82"];
  var TEXT = { color: "#4a5566", fontFamily: "inherit" };
  var AXIS = "#9aa6b8";
  var GRID_LINE = "#e1e6ee";
  var version = (/[?&]v=([^&]+)/.exec((document.currentScript || {}).src || "") || [])[1] || "";
  var maps = {};

  function percent(v) { return v == null ? "—" : Math.round(v * 1000) / 10 + "%"; }
  function number(v) { return v == null ? "—" : String(Math.round(v * 10) / 10); }

  /* The node's chart, made once and reused; an empty-state message replaces it when there is nothing to draw. */
  function instanceFor(node, height) {
    var box = node.querySelector(":scope > .chart-box");
    if (!box) {
      node.innerHTML = "";
      box = document.createElement("div");
      box.className = "chart-box";
      node.appendChild(box);
    }
    box.style.height = height + "px";
    var chart = echarts.getInstanceByDom(box) || echarts.init(box, null, { renderer: "canvas", locale: "ZH" });
    chart.resize();
    if (!box.dataset.observed && window.ResizeObserver) {
      box.dataset.observed = "1";
      new ResizeObserver(function () { chart.resize(); }).observe(box);
    }
    return chart;
  }
  function empty(node, text) {
    var box = node.querySelector(":scope > .chart-box");
    if (box) { echarts.dispose(box); }
    node.innerHTML = '<div class="empty">' + esc(text) + "</div>";
  }

  function toolbox(name) {
    return {
      right: 4, top: 0, itemSize: 14,
      feature: { saveAsImage: { title: "保存为图片", name: name || "统计图", type: "png", pixelRatio: 2, backgroundColor: "#fff" } }
    };
  }
  function legend(series) {
    return { top: 0, left: 40, itemWidth: 12, itemHeight: 12, textStyle: TEXT, data: series.map(function (s) { return s.name; }) };
  }
  function colorOf(s, i) { return s.color || PALETTE[i % PALETTE.length]; }
  function valueAxis(fmt, max) {
    return {
      type: "value", min: 0, max: max, minInterval: fmt === percent ? 0 : 1,
      axisLabel: { color: "#7a8699", formatter: function (v) { return fmt === percent ? Math.round(v * 100) + "%" : String(v); } },
      splitLine: { lineStyle: { color: GRID_LINE } }
    };
  }
  function categoryAxis(labels, crowded) {
    return {
      type: "category", data: labels,
      axisLine: { lineStyle: { color: AXIS } }, axisTick: { alignWithLabel: true },
      axisLabel: Object.assign({ interval: crowded ? "auto" : 0, rotate: labels.length > 8 ? 30 : 0, hideOverlap: true }, TEXT)
    };
  }
  function axisTooltip(fmt) {
    return {
      trigger: "axis", axisPointer: { type: "shadow" },
      valueFormatter: function (v) { return fmt(v); }
    };
  }

  /* Grouped bars: {labels, series: [{name, values, color}], percent}. */
  function barChart(node, spec) {
    var labels = spec.labels || [];
    var series = spec.series || [];
    if (!labels.length) { empty(node, "暂无数据"); return null; }
    var fmt = spec.percent ? percent : number;
    var chart = instanceFor(node, spec.height || 280);
    chart.setOption({
      color: PALETTE, textStyle: TEXT, animation: false,
      title: { show: false, text: spec.title || "" },
      toolbox: toolbox(spec.title || series.map(function (s) { return s.name; }).join("、")),
      legend: legend(series), tooltip: axisTooltip(fmt),
      grid: { left: 8, right: 12, top: 34, bottom: 8, containLabel: true },
      xAxis: categoryAxis(labels, false),
      yAxis: valueAxis(fmt, spec.percent ? 1 : null),
      series: series.map(function (s, i) {
        return {
          name: s.name, type: "bar", barMaxWidth: 22, data: s.values, itemStyle: { color: colorOf(s, i) },
          label: { show: series.length <= 2 && labels.length <= 14, position: "top", fontSize: 10, color: TEXT.color, formatter: function (p) { return p.value ? fmt(p.value) : ""; } }
        };
      })
    }, true);
    return chart;
  }

  /* Lines over weeks: {labels, series: [{name, values, color}]}. */
  function lineChart(node, spec) {
    var labels = spec.labels || [];
    var series = spec.series || [];
    if (!labels.length) { empty(node, "暂无数据"); return null; }
    var chart = instanceFor(node, spec.height || 280);
    chart.setOption({
      color: PALETTE, textStyle: TEXT, animation: false,
      toolbox: toolbox(spec.title || "每周受理与办结"),
      legend: legend(series), tooltip: { trigger: "axis" },
      grid: { left: 8, right: 16, top: 34, bottom: 8, containLabel: true },
      xAxis: Object.assign(categoryAxis(labels, labels.length > 12), { boundaryGap: false }),
      yAxis: valueAxis(number, null),
      series: series.map(function (s, i) {
        var color = colorOf(s, i);
        return { name: s.name, type: "line", data: s.values, symbol: "circle", symbolSize: 6, lineStyle: { width: 2.2, color: color }, itemStyle: { color: color, borderColor: color } };
      })
    }, true);
    return chart;
  }

  /* Stacked horizontal bars: {labels, series: [{name, values, color}]}. */
  function stackedBars(node, spec) {
    var labels = spec.labels || [];
    var series = spec.series || [];
    var totals = labels.map(function (_, i) { return series.reduce(function (sum, s) { return sum + (s.values[i] || 0); }, 0); });
    if (!labels.length || !totals.some(function (t) { return t > 0; })) { empty(node, "暂无超期事项"); return null; }
    var chart = instanceFor(node, 50 + 28 * labels.length);
    chart.setOption({
      color: PALETTE, textStyle: TEXT, animation: false,
      toolbox: toolbox(spec.title || "超期在办事项"),
      legend: legend(series), tooltip: axisTooltip(number),
      grid: { left: 8, right: 40, top: 34, bottom: 8, containLabel: true },
      yAxis: Object.assign(categoryAxis(labels, false), { inverse: true, axisLabel: Object.assign({ interval: 0 }, TEXT) }),
      xAxis: valueAxis(number, null),
      series: series.map(function (s, i) {
        return {
          name: s.name, type: "bar", stack: "total", barMaxWidth: 18, data: s.values.map(function (v) { return v || 0; }),
          itemStyle: { color: colorOf(s, i) },
          // The row's total at the end of its last part.
          label: i === series.length - 1 ? { show: true, position: "right", color: TEXT.color, fontSize: 11, formatter: function (p) { return totals[p.dataIndex] || ""; } } : { show: false }
        };
      })
    }, true);
    return chart;
  }

  /* The outlines of a map, fetched once from static/geo/<name>.json and registered with ECharts. */
  function loadMap(name) {
    if (!maps[name]) {
      maps[name] = fetch("/static/geo/" + encodeURIComponent(name) + ".json?v=" + version, { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) { throw new Error("地图轮廓加载失败"); }
          return response.json();
        })
        .then(function (geo) { echarts.registerMap(name, geo); return geo; });
      maps[name].catch(function () { delete maps[name]; });
    }
    return maps[name];
  }

  /* Regions coloured by a value: {map, values: [{name, value, detail}], name, unit, digits}. */
  function mapChart(node, spec) {
    var values = spec.values || [];
    if (!values.length) { empty(node, "暂无数据"); return Promise.resolve(null); }
    return loadMap(spec.map).then(function () {
      var known = values.filter(function (v) { return v.value != null; }).map(function (v) { return v.value; });
      var max = Math.max.apply(null, known.concat([0]));
      var digits = spec.digits == null ? 2 : spec.digits;
      var chart = instanceFor(node, spec.height || 420);
      chart.setOption({
        textStyle: TEXT, animation: false,
        toolbox: toolbox(spec.title || spec.name),
        tooltip: {
          trigger: "item",
          formatter: function (p) {
            var v = p.data && p.data.value;
            var line = esc(p.name) + "<br>" + esc(spec.name) + "：" + (v == null ? "—" : v.toFixed(digits) + esc(spec.unit || ""));
            return p.data && p.data.detail ? line + "<br>" + esc(p.data.detail) : line;
          }
        },
        visualMap: {
          min: 0, max: max > 0 ? max : 1, left: 8, bottom: 8, calculable: true, text: ["高", "低"], textStyle: TEXT,
          inRange: { color: ["#e8eef8", "#8fb0de", "#1451a8"] }, formatter: function (v) { return Number(v).toFixed(digits); }
        },
        series: [{
          name: spec.name, type: "map", map: spec.map, roam: false, selectedMode: false, nameProperty: "name",
          label: { show: true, fontSize: 11, color: "#1f2a37" },
          itemStyle: { borderColor: "#fff", borderWidth: 1, areaColor: "#f1f3f6" },
          emphasis: { label: { color: "#000" }, itemStyle: { areaColor: "#f5c26b" } },
          data: values
        }]
      }, true);
      return chart;
    }, function (error) { empty(node, error.message); return null; });
  }

  function chartOf(node) {
    var box = node && node.querySelector(":scope > .chart-box");
    return box ? echarts.getInstanceByDom(box) || null : null;
  }

  SV.chart = { bar: barChart, line: lineChart, stacked: stackedBars, map: mapChart, of: chartOf, palette: PALETTE };
})();
