// Build fhir_profiles/profiles/ from the FSH sources in fhir_profiles/fsh/.
//
//   node build-profiles.mjs [--out DIR]      (normally through `make profiles`)
//
// 1. SUSHI compiles fsh/ into differential StructureDefinitions, CodeSystems, ValueSets and
//    instances. Any error, or any warning not listed in fsh/sushi-ignoreWarnings.txt, fails.
// 2. fhir-snapshot-generator adds the snapshot to every StructureDefinition. It reads packages
//    from a throw-away FHIR package cache holding our package, hl7.fhir.r4.core#4.0.1 (linked
//    from ~/.fhir/packages, put there by `npm run fhir-core-cache`) and empty stand-ins for
//    the two packages its installer adds to every R4 context (hl7.terminology.r4,
//    hl7.fhir.uv.extensions.r4), which cannot be fetched offline and which our profiles do
//    not use. The registry is disabled, so nothing is downloaded.
// 3. Every resource is written to DIR (default: profiles/) as <resourceType>-<id>.json; files
//    left over from an earlier build are removed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FhirPackageExplorer } from 'fhir-package-explorer';
import { FhirSnapshotGenerator } from 'fhir-snapshot-generator';

const here = path.dirname(fileURLToPath(import.meta.url));
const fshDir = path.join(here, 'fsh');
const corePackage = path.join(os.homedir(), '.fhir', 'packages', 'hl7.fhir.r4.core#4.0.1');
const implicitPackages = ['hl7.terminology.r4', 'hl7.fhir.uv.extensions.r4'];
const config = { id: 'se.patientkontrakt', version: '0.1.0' };

// Top-level order for conformance resources (FHIR's own order); other keys keep SUSHI's order.
const leadingKeys = [
  'resourceType', 'id', 'meta', 'language', 'url', 'identifier', 'version', 'name', 'title', 'status',
  'experimental', 'date', 'publisher', 'contact', 'description', 'useContext', 'jurisdiction', 'purpose',
  'copyright',
];
const conformanceTypes = new Set(['StructureDefinition', 'CodeSystem', 'ValueSet', 'OperationDefinition']);

function parseArgs(argv) {
  let out = path.join(here, 'profiles');
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && argv[i + 1]) out = path.resolve(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]} (usage: node build-profiles.mjs [--out DIR])`);
  }
  return { out };
}

function runSushi(work) {
  const sushi = path.join(here, 'node_modules', 'fsh-sushi', 'dist', 'app.js');
  const result = spawnSync(process.execPath, [sushi, 'build', fshDir, '-o', work], { encoding: 'utf8' });
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  process.stdout.write(output);
  const counts = output.match(/(\d+) Errors?\s+(\d+) Warnings?/);
  if (result.status !== 0 || !counts || counts[1] !== '0' || counts[2] !== '0') {
    throw new Error(`SUSHI reported errors or unexpected warnings (exit ${result.status}); see above`);
  }
  const dir = path.join(work, 'fsh-generated', 'resources');
  return fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
}

function writePackage(dir, manifest, resources) {
  const pkg = path.join(dir, `${manifest.name}#${manifest.version}`, 'package');
  fs.mkdirSync(pkg, { recursive: true });
  fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify(manifest, null, 2));
  for (const res of resources) {
    fs.writeFileSync(path.join(pkg, `${res.resourceType}-${res.id}.json`), JSON.stringify(res));
  }
}

async function addSnapshots(work, resources) {
  if (!fs.existsSync(path.join(corePackage, 'package', 'StructureDefinition-Patient.json'))) {
    throw new Error(`${corePackage} is missing: run \`npm run fhir-core-cache\` (or \`make profiles\`)`);
  }
  const cache = path.join(work, 'package-cache');
  fs.mkdirSync(cache, { recursive: true });
  fs.symlinkSync(corePackage, path.join(cache, 'hl7.fhir.r4.core#4.0.1'), 'dir');
  for (const name of implicitPackages) {
    writePackage(cache, { name, version: '0.0.0', fhirVersions: ['4.0.1'], type: 'fhir.ig', dependencies: {} }, []);
  }
  const profiles = resources.filter((r) => r.resourceType === 'StructureDefinition');
  writePackage(cache, {
    name: config.id, version: config.version, fhirVersions: ['4.0.1'], type: 'fhir.ig',
    dependencies: { 'hl7.fhir.r4.core': '4.0.1' },
  }, profiles);

  const quiet = { info: () => {}, debug: () => {}, warn: (m) => console.error(`snapshot: ${m}`), error: (m) => console.error(`snapshot: ${m}`) };
  const fpe = await FhirPackageExplorer.create({
    context: [`${config.id}@${config.version}`], cachePath: cache, fhirVersion: '4.0.1',
    registryUrl: 'n/a', skipExamples: true, logger: { ...quiet, warn: () => {} },
  });
  const fsg = await FhirSnapshotGenerator.create({ fpe, fhirVersion: '4.0.1', cacheMode: 'none', logger: quiet });
  const core = path.join(corePackage, 'package');
  const result = [];
  for (const res of resources) {
    if (res.resourceType !== 'StructureDefinition') {
      result.push(res);
      continue;
    }
    const { snapshot } = await fsg.getSnapshot(res.url);
    // The snapshot's elements keep the base's mappings; declare their identities as the base does.
    const base = JSON.parse(fs.readFileSync(path.join(core, `StructureDefinition-${res.type}.json`), 'utf8'));
    result.push(insertSnapshot(res, snapshot, res.mapping ?? base.mapping));
  }
  return result;
}

// The StructureDefinition with `mapping` after `fhirVersion` and `snapshot` before `differential`.
function insertSnapshot(sd, snapshot, mapping) {
  const result = {};
  for (const [key, value] of Object.entries(sd)) {
    if (key === 'mapping') continue;
    if (key === 'differential') result.snapshot = snapshot;
    result[key] = value;
    if (key === 'fhirVersion' && mapping) result.mapping = mapping;
  }
  return result;
}

function ordered(resource, keys) {
  const result = {};
  for (const key of keys) if (key in resource) result[key] = resource[key];
  for (const [key, value] of Object.entries(resource)) if (!(key in result)) result[key] = value;
  return result;
}

function writeOutput(out, resources) {
  fs.mkdirSync(out, { recursive: true });
  for (const f of fs.readdirSync(out)) if (f.endsWith('.json')) fs.rmSync(path.join(out, f));
  for (const res of resources) {
    const body = conformanceTypes.has(res.resourceType) ? ordered(res, leadingKeys) : res;
    fs.writeFileSync(path.join(out, `${res.resourceType}-${res.id}.json`), `${JSON.stringify(body, null, 2)}\n`);
  }
}

async function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pk-profiles-'));
  try {
    const resources = await addSnapshots(work, runSushi(work));
    writeOutput(out, resources);
    console.log(`wrote ${resources.length} resources to ${out}`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`build-profiles: ${err.message}`);
  process.exit(1);
});
