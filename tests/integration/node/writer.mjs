// Applies write operations through the official MongoDB Node.js driver, for changesync's integration tests.
//
// Usage: node writer.mjs <uri> <database> < ops.json
//
// stdin holds a JSON array in MongoDB Extended JSON, each item
//   {op: "insertOne" | "updateOne" | "updateMany" | "replaceOne" | "deleteOne",
//    collection, filter?, document?, update?}   (update: an operator document or a pipeline array)
// The operations run in order; each prints one canonical Extended JSON result line on stdout.
// Any error stops the run with a message on stderr and exit code 1.
import { BSON, MongoClient } from "mongodb";

// mongodb is CommonJS: Node can only see its BSON namespace as a named export, not EJSON itself.
const { EJSON } = BSON;

// Fields each operation needs, checked before anything is written.
const REQUIRED_FIELDS = {
  insertOne: ["document"],
  updateOne: ["filter", "update"],
  updateMany: ["filter", "update"],
  replaceOne: ["filter", "document"],
  deleteOne: ["filter"],
};

const RUN = {
  insertOne: (coll, op) => coll.insertOne(op.document),
  updateOne: (coll, op) => coll.updateOne(op.filter, op.update),
  updateMany: (coll, op) => coll.updateMany(op.filter, op.update),
  replaceOne: (coll, op) => coll.replaceOne(op.filter, op.document),
  deleteOne: (coll, op) => coll.deleteOne(op.filter),
};

// How long the driver may look for a server before giving up; the Python caller allows 30 s in total.
const SERVER_SELECTION_TIMEOUT_MS = 10_000;

function validate(ops) {
  if (!Array.isArray(ops)) {
    throw new Error("stdin must hold a JSON array of operations");
  }
  ops.forEach((op, index) => {
    const required = REQUIRED_FIELDS[op?.op];
    if (required === undefined) {
      throw new Error(`operation ${index}: unknown op ${JSON.stringify(op?.op)}`);
    }
    if (typeof op.collection !== "string" || op.collection === "") {
      throw new Error(`operation ${index}: collection must be a non-empty string`);
    }
    const missing = required.filter((field) => op[field] === undefined);
    if (missing.length > 0) {
      throw new Error(`operation ${index} (${op.op}): missing ${missing.join(", ")}`);
    }
  });
  return ops;
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function main([uri, dbName]) {
  if (!uri || !dbName) {
    throw new Error("usage: node writer.mjs <uri> <database> < ops.json");
  }
  // relaxed: false keeps numeric BSON types (Int32, Int64, Double) as the caller wrote them.
  const ops = validate(EJSON.parse(await readStdin(), { relaxed: false }));
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: SERVER_SELECTION_TIMEOUT_MS });
  try {
    const db = client.db(dbName);
    for (const op of ops) {
      const result = await RUN[op.op](db.collection(op.collection), op);
      process.stdout.write(`${EJSON.stringify(result, { relaxed: false })}\n`);
    }
  } finally {
    await client.close();
  }
}

main(process.argv.slice(2)).catch((error) => {
  process.stderr.write(`writer.mjs: ${error.message}\n`);
  process.exitCode = 1;
});
