// A small, dependency-free renderer of the OpenAPI document embedded in this page (mdmserver/ops/static).
(function () {
  "use strict";
  var spec = JSON.parse(document.getElementById("openapi").textContent);
  var root = document.getElementById("operations");
  var METHODS = ["get", "post", "put", "patch", "delete"];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function resolve(schema) {
    if (schema && schema.$ref) {
      var name = schema.$ref.split("/").pop();
      return spec.components.schemas[name] || {};
    }
    return schema || {};
  }

  // A schema as an example-like outline: refs expanded (each at most once per branch), types as values.
  function outline(schema, seen) {
    seen = seen || [];
    if (schema && schema.$ref) {
      if (seen.indexOf(schema.$ref) >= 0) { return "<" + schema.$ref.split("/").pop() + ">"; }
      return outline(resolve(schema), seen.concat([schema.$ref]));
    }
    schema = schema || {};
    if (schema.allOf) {
      var merged = {};
      schema.allOf.forEach(function (part) {
        var o = outline(part, seen);
        if (o && typeof o === "object" && !Array.isArray(o)) { Object.assign(merged, o); }
      });
      return merged;
    }
    if (schema.oneOf) { return schema.oneOf.map(function (s) { return outline(s, seen); }).join(" | "); }
    if (schema.type === "array") { return [outline(schema.items, seen)]; }
    if (schema.type === "object" || schema.properties) {
      var out = {};
      var required = schema.required || [];
      Object.keys(schema.properties || {}).forEach(function (k) {
        out[k + (required.indexOf(k) >= 0 ? "" : "?")] = outline(schema.properties[k], seen);
      });
      if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
        out["<name>"] = outline(schema.additionalProperties, seen);
      }
      return out;
    }
    var text = schema.type || "any";
    if (schema.format) { text += " (" + schema.format + ")"; }
    if (schema.enum) { text = schema.enum.join(" | "); }
    if (schema.nullable) { text += " | null"; }
    return text;
  }

  function schemaBlock(content) {
    var types = Object.keys(content || {});
    if (!types.length) { return el("p", {}, ["(no content)"]); }
    return el("div", {}, [
      el("div", {}, [el("code", {}, [types.join(", ")])]),
      el("pre", {}, [JSON.stringify(outline(content[types[0]].schema), null, 2)]),
    ]);
  }

  function operationNode(path, method, op) {
    var body = el("div", { class: "body" });
    if (op.description) { body.appendChild(el("p", { class: "desc" }, [op.description])); }
    if (op.parameters && op.parameters.length) {
      var rows = op.parameters.map(function (p) {
        return el("tr", {}, [el("td", {}, [el("code", {}, [p.name])]), el("td", {}, [p.in]),
          el("td", {}, [JSON.stringify(outline(p.schema))]), el("td", {}, [p.description || ""])]);
      });
      body.appendChild(el("h4", {}, ["Parameters"]));
      body.appendChild(el("table", {}, [el("tr", {}, [el("th", {}, ["name"]), el("th", {}, ["in"]),
        el("th", {}, ["schema"]), el("th", {}, ["description"])])].concat(rows)));
    }
    if (op.requestBody) {
      body.appendChild(el("h4", {}, ["Request body" + (op.requestBody.required ? "" : " (optional)")]));
      body.appendChild(schemaBlock(op.requestBody.content));
    }
    body.appendChild(el("h4", {}, ["Responses"]));
    Object.keys(op.responses || {}).forEach(function (status) {
      var r = op.responses[status];
      var item = el("details", {}, [el("summary", {}, [status + " " + (r.description || "")])]);
      item.appendChild(schemaBlock(r.content));
      body.appendChild(item);
    });
    var summary = el("summary", {}, [
      el("span", { class: "method " + method }, [method.toUpperCase()]),
      el("span", { class: "path" }, [path]),
      el("span", {}, [op.summary || ""]),
      el("span", { class: "scope" }, [op["x-required-scope"] ? "scope: " + op["x-required-scope"] : "public"]),
    ]);
    var node = el("details", { class: "op" }, [summary, body]);
    node.dataset.search = [path, method, op.summary || "", (op.tags || []).join(" ")].join(" ").toLowerCase();
    return node;
  }

  var byTag = {};
  Object.keys(spec.paths).forEach(function (path) {
    METHODS.forEach(function (method) {
      var op = spec.paths[path][method];
      if (!op) { return; }
      var tag = (op.tags || ["other"])[0];
      (byTag[tag] = byTag[tag] || []).push(operationNode(path, method, op));
    });
  });
  root.textContent = "";
  Object.keys(byTag).sort().forEach(function (tag) {
    var section = el("section", {}, [el("h2", {}, [tag])].concat(byTag[tag]));
    root.appendChild(section);
  });

  document.getElementById("search").addEventListener("input", function (event) {
    var words = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
    root.querySelectorAll("details.op").forEach(function (node) {
      node.hidden = !words.every(function (w) { return node.dataset.search.indexOf(w) >= 0; });
    });
    root.querySelectorAll("section").forEach(function (section) {
      section.hidden = !section.querySelector("details.op:not([hidden])");
    });
  });
})();
