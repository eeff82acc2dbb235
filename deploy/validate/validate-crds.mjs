// Validates custom resources (KEDA ScaledObject, Prometheus Operator ServiceMonitor and
// PrometheusRule, Strimzi KafkaTopic) against their CRDs' schemas, offline, with the
// kubernetes-models packages that scripts/deploy-tools.sh installs from package-lock.json.
//
//   node deploy/validate/validate-crds.mjs DOCS.json
//
// DOCS.json is a JSON array of resources (tests/unit/deploy converts the built YAML). Prints one
// line per resource and exits 1 when any fails.
//
// Strict like `kubectl apply --validate=strict`: the CRD schemas allow unknown fields (the API
// server prunes them silently), so a misspelt field would pass them. Each resource is validated
// through a Proxy that records which properties the schema's validator looks up; a property of
// an object whose schema names properties, that the validator never looked at, is unknown. An
// object the validator enumerates (a map, x-kubernetes-preserve-unknown-fields) is not checked.
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const modules = process.env.OPENLFR_DEPLOY_NODE_MODULES || join(repo, "build", "deploy-tools", "node", "node_modules");

// apiVersion -> [package, module path]. Imported by file URL: the packages' export maps
// would otherwise resolve against this script's folder, which has no node_modules.
const GROUPS = {
  "keda.sh/v1alpha1": ["@kubernetes-models/keda", "keda.sh/v1alpha1/index.js"],
  "monitoring.coreos.com/v1": ["@kubernetes-models/prometheus-operator", "monitoring.coreos.com/v1/index.js"],
  "kafka.strimzi.io/v1beta2": ["@kubernetes-models/strimzi-kafka-operator", "kafka.strimzi.io/v1beta2/index.js"],
  "kafka.strimzi.io/v1": ["@kubernetes-models/strimzi-kafka-operator", "kafka.strimzi.io/v1/index.js"],
};

async function modelClass(apiVersion, kind) {
  const entry = GROUPS[apiVersion];
  if (!entry) return null;
  const module = await import(pathToFileURL(join(modules, entry[0], entry[1])).href);
  return module[kind] ?? null;
}

function track(value, path, seen) {
  if (value === null || typeof value !== "object") return value;
  const record = { path, target: value, looked: new Set(), enumerated: false, array: Array.isArray(value) };
  seen.push(record);
  const children = new Map();
  return new Proxy(value, {
    get(target, key, receiver) {
      const child = Reflect.get(target, key, receiver);
      if (typeof key !== "string") return child;
      record.looked.add(key);
      if (child === null || typeof child !== "object") return child;
      if (!children.has(key)) children.set(key, track(child, `${path}/${key}`, seen));
      return children.get(key);
    },
    has(target, key) {
      if (typeof key === "string") record.looked.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      record.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

export async function validate(doc) {
  const cls = await modelClass(doc.apiVersion, doc.kind);
  if (!cls) return [`no schema for ${doc.apiVersion} ${doc.kind}`];
  const seen = [];
  const errors = [];
  try {
    cls.prototype.validate.call(track(doc, "", seen));
  } catch (err) {
    errors.push(err.message);
  }
  for (const record of seen) {
    if (record.array || record.enumerated || record.looked.size === 0) continue;
    for (const key of Object.keys(record.target)) {
      if (!record.looked.has(key)) errors.push(`${record.path}/${key}: unknown field`);
    }
  }
  return errors;
}

const [file] = process.argv.slice(2);
if (!file) {
  console.error("usage: validate-crds.mjs DOCS.json");
  process.exit(2);
}
let failed = 0;
for (const doc of JSON.parse(readFileSync(file, "utf8"))) {
  const name = `${doc.kind}/${doc.metadata?.name}`;
  const errors = await validate(doc);
  if (errors.length) {
    failed++;
    console.log(`FAIL ${name}: ${errors.join("; ")}`);
  } else {
    console.log(`ok ${name}`);
  }
}
process.exit(failed ? 1 : 0);
