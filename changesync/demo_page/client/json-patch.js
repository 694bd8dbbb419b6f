// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
/** A patch could not be applied; `index` is the failing operation's position in the patch. */
export class JsonPatchError extends Error {
    index;
    operation;
    name = "JsonPatchError";
    constructor(message, index, operation) {
        super(`operation ${index} (${operation.op} ${operation.path}): ${message}`);
        this.index = index;
        this.operation = operation;
    }
}
const ARRAY_INDEX = /^(0|[1-9][0-9]*)$/;
const hasOwn = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
/** The reference tokens of an RFC 6901 JSON Pointer (`""` is the whole document). */
export function parsePointer(pointer) {
    if (pointer === "")
        return [];
    if (!pointer.startsWith("/"))
        throw new SyntaxError(`a JSON Pointer starts with "/": ${JSON.stringify(pointer)}`);
    return pointer
        .slice(1)
        .split("/")
        .map((token) => {
        if (/~(?![01])/.test(token))
            throw new SyntaxError(`invalid escape in JSON Pointer ${JSON.stringify(pointer)}`);
        return token.replace(/~1/g, "/").replace(/~0/g, "~");
    });
}
/** Structural equality of JSON values (object key order does not matter). */
export function jsonEqual(a, b) {
    if (a === b)
        return true;
    if (typeof a !== "object" || typeof b !== "object" || a === null || b === null)
        return false;
    if (Array.isArray(a) !== Array.isArray(b))
        return false;
    if (Array.isArray(a)) {
        const other = b;
        return a.length === other.length && a.every((value, index) => jsonEqual(value, other[index]));
    }
    const left = a;
    const right = b;
    const keys = Object.keys(left);
    return (keys.length === Object.keys(right).length &&
        keys.every((key) => hasOwn(right, key) && jsonEqual(left[key], right[key])));
}
function isContainer(value) {
    return typeof value === "object" && value !== null;
}
function deepCopy(value) {
    return value === undefined ? value : JSON.parse(JSON.stringify(value));
}
/** Defines an own, enumerable member even for names such as `__proto__`. */
function setMember(object, key, value) {
    Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
}
/**
 * Applies `patch` to `document` and returns the result; `document` is never modified.
 * Throws `JsonPatchError` (and applies nothing) when an operation fails, including a failed `test`.
 */
export function applyPatch(document, patch) {
    // Containers copied during this call: later operations may modify them in place.
    const owned = new WeakSet();
    const own = (container) => {
        if (owned.has(container))
            return container;
        // Spreading defines own members, so a member named "__proto__" stays a member.
        const copy = (Array.isArray(container) ? [...container] : { ...container });
        owned.add(copy);
        return copy;
    };
    let root = document;
    const fail = (message, index, operation) => {
        throw new JsonPatchError(message, index, operation);
    };
    const get = (tokens, index, operation) => {
        let node = root;
        for (const token of tokens) {
            if (Array.isArray(node)) {
                if (!ARRAY_INDEX.test(token) || Number(token) >= node.length)
                    fail("path not found", index, operation);
                node = node[Number(token)];
            }
            else if (isContainer(node) && hasOwn(node, token)) {
                node = node[token];
            }
            else {
                fail("path not found", index, operation);
            }
        }
        return node;
    };
    /** The parent container of `tokens`, copied (owned) along the way, so that it may be changed in place. */
    const parentFor = (tokens, index, operation) => {
        if (!isContainer(root))
            fail("path not found", index, operation);
        root = own(root);
        let node = root;
        for (const token of tokens.slice(0, -1)) {
            let child;
            if (Array.isArray(node)) {
                if (!ARRAY_INDEX.test(token) || Number(token) >= node.length)
                    fail("path not found", index, operation);
                child = node[Number(token)];
            }
            else {
                if (!hasOwn(node, token))
                    fail("path not found", index, operation);
                child = node[token];
            }
            if (!isContainer(child))
                fail("path not found", index, operation);
            const copy = own(child);
            if (Array.isArray(node))
                node[Number(token)] = copy;
            else
                setMember(node, token, copy);
            node = copy;
        }
        return node;
    };
    const add = (tokens, value, index, operation) => {
        if (tokens.length === 0) {
            root = value;
            return;
        }
        const parent = parentFor(tokens, index, operation);
        const last = tokens[tokens.length - 1];
        if (Array.isArray(parent)) {
            if (last === "-")
                parent.push(value);
            else if (ARRAY_INDEX.test(last) && Number(last) <= parent.length)
                parent.splice(Number(last), 0, value);
            else
                fail("array index out of range", index, operation);
        }
        else {
            setMember(parent, last, value);
        }
    };
    const remove = (tokens, index, operation) => {
        if (tokens.length === 0)
            fail("cannot remove the whole document", index, operation);
        const removed = get(tokens, index, operation);
        const parent = parentFor(tokens, index, operation);
        const last = tokens[tokens.length - 1];
        if (Array.isArray(parent))
            parent.splice(Number(last), 1);
        else
            delete parent[last];
        return removed;
    };
    patch.forEach((operation, index) => {
        let tokens;
        try {
            tokens = parsePointer(operation.path);
        }
        catch (error) {
            return fail(error.message, index, operation);
        }
        const from = () => {
            if (typeof operation.from !== "string")
                return fail(`"from" is required`, index, operation);
            try {
                return parsePointer(operation.from);
            }
            catch (error) {
                return fail(error.message, index, operation);
            }
        };
        const value = () => {
            if (!("value" in operation))
                fail(`"value" is required`, index, operation);
            return operation.value;
        };
        switch (operation.op) {
            case "add":
                add(tokens, value(), index, operation);
                break;
            case "remove":
                remove(tokens, index, operation);
                break;
            case "replace": {
                const replacement = value();
                get(tokens, index, operation);
                if (tokens.length === 0)
                    root = replacement;
                else {
                    const parent = parentFor(tokens, index, operation);
                    const last = tokens[tokens.length - 1];
                    if (Array.isArray(parent))
                        parent[Number(last)] = replacement;
                    else
                        setMember(parent, last, replacement);
                }
                break;
            }
            case "move": {
                const source = from();
                if (source.length < tokens.length && source.every((token, i) => token === tokens[i])) {
                    fail(`cannot move a value into one of its own children`, index, operation);
                }
                if (source.length === tokens.length && source.every((token, i) => token === tokens[i])) {
                    get(source, index, operation);
                    break;
                }
                add(tokens, remove(source, index, operation), index, operation);
                break;
            }
            case "copy":
                // A copy must not share containers that this call may still modify in place.
                add(tokens, deepCopy(get(from(), index, operation)), index, operation);
                break;
            case "test":
                if (!jsonEqual(get(tokens, index, operation), value()))
                    fail("test failed", index, operation);
                break;
            default:
                fail(`unknown operation ${JSON.stringify(operation.op)}`, index, operation);
        }
        return undefined;
    });
    return root;
}
