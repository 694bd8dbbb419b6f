// RFC 6902 conformance (the RFC's Appendix A), immutability and structural sharing, and a
// differential test against fast-json-patch on random documents and patches.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import jsonpatch from "fast-json-patch";

import { JsonPatchError, applyPatch, jsonEqual, parsePointer } from "../dist/index.js";

const deepFreeze = (value) => {
  if (typeof value === "object" && value !== null) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
};

/** Applies on a frozen input, so that any mutation of the input throws. */
const apply = (document, patch) => applyPatch(deepFreeze(structuredClone(document)), patch);

describe("RFC 6902 Appendix A", () => {
  const examples = [
    ["A.1 add an object member", { foo: "bar" }, [{ op: "add", path: "/baz", value: "qux" }], { baz: "qux", foo: "bar" }],
    ["A.2 add an array element", { foo: ["bar", "baz"] }, [{ op: "add", path: "/foo/1", value: "qux" }], { foo: ["bar", "qux", "baz"] }],
    ["A.3 remove an object member", { baz: "qux", foo: "bar" }, [{ op: "remove", path: "/baz" }], { foo: "bar" }],
    ["A.4 remove an array element", { foo: ["bar", "qux", "baz"] }, [{ op: "remove", path: "/foo/1" }], { foo: ["bar", "baz"] }],
    ["A.5 replace a value", { baz: "qux", foo: "bar" }, [{ op: "replace", path: "/baz", value: "boo" }], { baz: "boo", foo: "bar" }],
    [
      "A.6 move a value",
      { foo: { bar: "baz", waldo: "fred" }, qux: { corge: "grault" } },
      [{ op: "move", from: "/foo/waldo", path: "/qux/thud" }],
      { foo: { bar: "baz" }, qux: { corge: "grault", thud: "fred" } },
    ],
    ["A.7 move an array element", { foo: ["all", "grass", "cows", "eat"] }, [{ op: "move", from: "/foo/1", path: "/foo/3" }], { foo: ["all", "cows", "eat", "grass"] }],
    [
      "A.8 test a value: success",
      { baz: "qux", foo: ["a", 2, "c"] },
      [{ op: "test", path: "/baz", value: "qux" }, { op: "test", path: "/foo/1", value: 2 }],
      { baz: "qux", foo: ["a", 2, "c"] },
    ],
    ["A.10 add a nested member object", { foo: "bar" }, [{ op: "add", path: "/child", value: { grandchild: {} } }], { foo: "bar", child: { grandchild: {} } }],
    ["A.11 ignore unrecognized elements", { foo: "bar" }, [{ op: "add", path: "/baz", value: "qux", xyz: 123 }], { foo: "bar", baz: "qux" }],
    ["A.14 ~ escape ordering", { "/": 9, "~1": 10 }, [{ op: "test", path: "/~01", value: 10 }], { "/": 9, "~1": 10 }],
    ["A.16 add an array value", { foo: ["bar"] }, [{ op: "add", path: "/foo/-", value: ["abc", "def"] }], { foo: ["bar", ["abc", "def"]] }],
  ];
  for (const [name, document, patch, expected] of examples) {
    it(name, () => assert.deepEqual(apply(document, patch), expected));
  }

  const failures = [
    ["A.9 test a value: error", { baz: "qux" }, [{ op: "test", path: "/baz", value: "bar" }]],
    ["A.12 add to a nonexistent target", { foo: "bar" }, [{ op: "add", path: "/baz/bat", value: "qux" }]],
    ["A.15 comparing strings and numbers", { "/": 9, "~1": 10 }, [{ op: "test", path: "/~01", value: "10" }]],
  ];
  for (const [name, document, patch] of failures) {
    it(name, () => assert.throws(() => apply(document, patch), JsonPatchError));
  }
});

describe("errors", () => {
  const cases = [
    ["remove a missing member", { a: 1 }, [{ op: "remove", path: "/b" }]],
    ["replace a missing member", { a: 1 }, [{ op: "replace", path: "/b", value: 2 }]],
    ["array index past the end", { a: [1] }, [{ op: "add", path: "/a/2", value: 2 }]],
    ["array index with a leading zero", { a: [1, 2] }, [{ op: "replace", path: "/a/01", value: 2 }]],
    ["remove with '-'", { a: [1] }, [{ op: "remove", path: "/a/-" }]],
    ["move into its own child", { a: { b: {} } }, [{ op: "move", from: "/a", path: "/a/b/c" }]],
    ["pointer without a leading slash", { a: 1 }, [{ op: "replace", path: "a", value: 2 }]],
    ["bad escape", { a: 1 }, [{ op: "add", path: "/a~2", value: 2 }]],
    ["unknown op", { a: 1 }, [{ op: "merge", path: "/a", value: 2 }]],
    ["add without a value", { a: 1 }, [{ op: "add", path: "/b" }]],
    ["a member of a number", { a: 1 }, [{ op: "add", path: "/a/b", value: 2 }]],
    ["an inherited member is not a member", {}, [{ op: "replace", path: "/toString", value: 1 }]],
  ];
  for (const [name, document, patch] of cases) {
    it(name, () => assert.throws(() => apply(document, patch), JsonPatchError));
  }

  it("names the failing operation and applies nothing", () => {
    const document = deepFreeze({ a: 1 });
    const error = assert.throws(
      () => applyPatch(document, [{ op: "replace", path: "/a", value: 2 }, { op: "remove", path: "/zz" }]),
      (thrown) => thrown instanceof JsonPatchError && thrown.index === 1 && /remove \/zz/.test(thrown.message),
    );
    assert.equal(error, undefined);
    assert.deepEqual(document, { a: 1 });
  });
});

describe("immutability and sharing", () => {
  it("copies only the path to a change", () => {
    const document = deepFreeze({ nodes: [{ id: "a", position: { x: 1 } }, { id: "b", position: { x: 2 } }], edges: [{ id: "e" }] });
    const result = applyPatch(document, [{ op: "replace", path: "/nodes/0/position/x", value: 5 }]);
    assert.equal(result.nodes[0].position.x, 5);
    assert.equal(document.nodes[0].position.x, 1);
    assert.notEqual(result, document);
    assert.notEqual(result.nodes, document.nodes);
    assert.equal(result.nodes[1], document.nodes[1], "an untouched node keeps its identity");
    assert.equal(result.edges, document.edges, "an untouched array keeps its identity");
  });

  it("an empty patch returns the same document", () => {
    const document = { a: 1 };
    assert.equal(applyPatch(document, []), document);
  });

  it("a copied value is independent of its source", () => {
    const result = apply({ a: { b: [1] } }, [
      { op: "copy", from: "/a", path: "/c" },
      { op: "add", path: "/c/b/-", value: 2 },
      { op: "add", path: "/a/b/-", value: 3 },
    ]);
    assert.deepEqual(result, { a: { b: [1, 3] }, c: { b: [1, 2] } });
  });

  it("never mutates a patch's values", () => {
    const patch = deepFreeze([{ op: "add", path: "/n", value: { list: [1] } }, { op: "add", path: "/n/list/-", value: 2 }]);
    assert.deepEqual(applyPatch({}, patch), { n: { list: [1, 2] } });
    assert.deepEqual(patch[0].value, { list: [1] });
  });

  it("keeps '__proto__' a plain member", () => {
    const document = JSON.parse('{"__proto__": {"x": 1}}');
    const result = applyPatch(document, [{ op: "add", path: "/__proto__/y", value: 2 }]);
    assert.deepEqual(Object.keys(result), ["__proto__"]);
    assert.deepEqual(JSON.parse(JSON.stringify(result)), JSON.parse('{"__proto__": {"x": 1, "y": 2}}'));
    assert.equal({}.y, undefined, "Object.prototype untouched");
  });

  it("replaces the whole document with an empty path", () => {
    assert.deepEqual(apply({ a: 1 }, [{ op: "replace", path: "", value: [1] }]), [1]);
  });
});

describe("pointers and equality", () => {
  it("parses RFC 6901 pointers", () => {
    assert.deepEqual(parsePointer(""), []);
    assert.deepEqual(parsePointer("/"), [""]);
    assert.deepEqual(parsePointer("/a~1b/m~0n/0"), ["a/b", "m~n", "0"]);
  });

  it("compares JSON values structurally", () => {
    assert.ok(jsonEqual({ a: [1, { b: null }], c: "x" }, { c: "x", a: [1, { b: null }] }));
    assert.ok(!jsonEqual({ a: 1 }, { a: 1, b: undefined }));
    assert.ok(!jsonEqual([1, 2], { 0: 1, 1: 2 }));
    assert.ok(!jsonEqual(1, "1"));
  });
});

describe("against fast-json-patch", () => {
  // A small deterministic generator (mulberry32), so that a failure can be replayed.
  const random = (seed) => () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };

  const value = (next, depth) => {
    const roll = next();
    if (depth > 2 || roll < 0.4) return [1, "s", null, true, 2.5][Math.floor(next() * 5)];
    if (roll < 0.7) return Array.from({ length: Math.floor(next() * 4) }, () => value(next, depth + 1));
    return Object.fromEntries(Array.from({ length: Math.floor(next() * 4) }, (_, i) => [`k${i}`, value(next, depth + 1)]));
  };

  /** Every pointer to an existing value, and for containers also a pointer where "add" may insert. */
  const pointers = (node, prefix = "") => {
    const found = [prefix];
    if (Array.isArray(node)) node.forEach((child, i) => found.push(...pointers(child, `${prefix}/${i}`)));
    else if (node && typeof node === "object") for (const [k, child] of Object.entries(node)) found.push(...pointers(child, `${prefix}/${k}`));
    return found;
  };

  const operation = (next, document) => {
    const existing = pointers(document).filter((p) => p !== "");
    const pick = (list) => list[Math.floor(next() * list.length)];
    const containers = pointers(document).filter((p) => {
      const target = p === "" ? document : jsonpatch.getValueByPointer(document, p);
      return target && typeof target === "object";
    });
    const roll = next();
    if (roll < 0.35 || existing.length === 0) {
      const parent = pick(containers);
      const target = parent === "" ? document : jsonpatch.getValueByPointer(document, parent);
      const last = Array.isArray(target) ? (next() < 0.3 ? "-" : String(Math.floor(next() * (target.length + 1)))) : `n${Math.floor(next() * 3)}`;
      return { op: "add", path: `${parent}/${last}`, value: value(next, 1) };
    }
    if (roll < 0.55) return { op: "remove", path: pick(existing) };
    if (roll < 0.8) return { op: "replace", path: pick(existing), value: value(next, 1) };
    if (roll < 0.9) {
      const from = pick(existing);
      const op = next() < 0.5 ? "move" : "copy";
      // A move's path is resolved after the value was removed (RFC 6902 4.4): pick it in that document.
      const after = op === "move" ? jsonpatch.applyPatch(jsonpatch.deepClone(document), [{ op: "remove", path: from }]).newDocument : document;
      const candidates = pointers(after).filter((p) => {
        const target = p === "" ? after : jsonpatch.getValueByPointer(after, p);
        return target && typeof target === "object" && !(p + "/").startsWith(from + "/");
      });
      const parent = pick(candidates);
      if (parent === undefined) return { op: "test", path: from, value: jsonpatch.getValueByPointer(document, from) };
      const target = parent === "" ? after : jsonpatch.getValueByPointer(after, parent);
      const last = Array.isArray(target) ? "-" : `m${Math.floor(next() * 3)}`;
      return { op, from, path: `${parent}/${last}` };
    }
    const path = pick(existing);
    return { op: "test", path, value: jsonpatch.getValueByPointer(document, path) };
  };

  it("agrees on 2000 random valid patches", () => {
    const next = random(20261126);
    for (let round = 0; round < 2000; round++) {
      const document = { root: value(next, 0), list: [1, { a: [2] }] };
      let expected = document;
      const patch = [];
      for (let i = 0; i < 1 + Math.floor(next() * 5); i++) {
        const op = operation(next, expected);
        // A move onto an existing array slot or into a removed path makes the next operation invalid; skip those.
        try {
          expected = jsonpatch.applyPatch(jsonpatch.deepClone(expected), [op], true, true).newDocument;
          patch.push(op);
        } catch {
          break;
        }
      }
      const original = structuredClone(document);
      const actual = applyPatch(deepFreeze(document), patch);
      assert.deepEqual(actual, expected, `round ${round}: ${JSON.stringify({ document: original, patch })}`);
    }
  });
});
