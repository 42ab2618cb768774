// fhir-kit-client (from the npm registry, unmodified) driven from the command line for
// tests/interop/test_fhir_kit_client.py and test_clients_notify_export.py:
//
//     node client.mjs BASE_URL TOKEN COMMAND ARGS...
//
//   read TYPE/ID                    the resource
//   search TYPE QUERY               every page (nextPage to the end): {pages, total, ids}
//   transaction FILE                POST the Bundle in FILE to the base: the response Bundle
//   everything PATIENT_ID [COUNT]   Patient/$everything, paged to the end: {pages, total, ids}
//   patch TYPE/ID JSON              a JSON Patch (application/json-patch+json): the result
//   create TYPE FILE                POST the resource in FILE: the created resource
//   operation TYPE/ID NAME          GET TYPE/ID/$NAME: what it answers
//   export PATH [QUERY]             Bulk Data kick-off (PATH e.g. $export, Patient/$export,
//                                   Group/ID/$export), status polls, the manifest and every
//                                   file downloaded: {kickoff, polls, manifest, ids}
//   export-cancel PATH [QUERY]      kick-off, then DELETE of the status URL and a poll after it:
//                                   {kickoff, cancel, after}
//
// One JSON object on stdout: {"ok": true, "result": ...}, or, for an HTTP error the client
// reports, {"ok": false, "status": N, "outcome": BODY}. Anything else is a crash (exit 1).
// TOKEN may be "-" for no token.

import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'fhir-kit-client';

const [baseUrl, token, command, ...args] = process.argv.slice(2);
if (!baseUrl || !token || !command) {
  console.error('usage: node client.mjs BASE_URL TOKEN COMMAND ARGS...');
  process.exit(2);
}
const client = new Client({ baseUrl, ...(token === '-' ? {} : { bearerToken: token }) });

function typeAndId(reference) {
  const [resourceType, id] = reference.split('/');
  return { resourceType, id };
}

function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

function entryKeys(bundle) {
  return (bundle.entry ?? [])
    .filter((e) => e.search?.mode !== 'outcome')
    .map((e) => `${e.resource.resourceType}/${e.resource.id}`);
}

// Every page of a searchset, following the server's `next` links with the client's nextPage.
async function allPages(first) {
  const ids = [...entryKeys(first)];
  const totals = [first.total];
  let pages = 1;
  let page = first;
  for (;;) {
    const next = await client.nextPage({ bundle: page });
    if (next === undefined) break;
    pages += 1;
    if (pages > 1000) throw new Error('more than 1000 pages: the next links do not end');
    ids.push(...entryKeys(next));
    totals.push(next.total);
    page = next;
  }
  return { pages, total: first.total, totals, ids };
}

function header(resource, name) {
  return Client.httpFor(resource).response?.headers.get(name) ?? null;
}

// The Bulk Data IG 2.0 flow: kick-off (202 + Content-Location), status polls (202 with
// Retry-After until 200 with the manifest), then each output file (ndjson, which the client's
// JSON parsing cannot read: fetched with the same token, as requiresAccessToken says).
async function bulkExport(path, query) {
  const url = query ? `${path}?${query}` : path;
  const kickoff = await client.request(url, { options: { headers: { prefer: 'respond-async' } } });
  const kickoffStatus = Client.httpFor(kickoff).response.status;
  const statusUrl = header(kickoff, 'content-location');
  if (!statusUrl) throw new Error(`kick-off answered ${kickoffStatus} without Content-Location`);
  const polls = [];
  const deadline = Date.now() + 120_000;
  let manifest;
  for (;;) {
    const answer = await client.request(statusUrl);
    const status = Client.httpFor(answer).response.status;
    polls.push({ status, retryAfter: header(answer, 'retry-after'), progress: header(answer, 'x-progress') });
    if (status === 200) {
      manifest = answer;
      break;
    }
    if (Date.now() > deadline) throw new Error('the export did not finish within 120 s');
    const retry = Number(header(answer, 'retry-after'));
    await sleep(Math.min(Number.isFinite(retry) && retry > 0 ? retry * 1000 : 500, 2000));
  }
  const ids = {};
  const files = [];
  for (const output of [...(manifest.output ?? []), ...(manifest.error ?? [])]) {
    const headers = { accept: 'application/fhir+ndjson' };
    if (manifest.requiresAccessToken && token !== '-') headers.authorization = `Bearer ${token}`;
    const response = await fetch(output.url, { headers });
    const text = await response.text();
    const lines = text.split('\n').filter((line) => line.trim() !== '');
    files.push({ type: output.type, url: output.url, status: response.status,
      contentType: response.headers.get('content-type'), lines: lines.length, count: output.count ?? null });
    if (response.ok) {
      for (const line of lines) {
        const resource = JSON.parse(line);
        (ids[resource.resourceType] ??= []).push(resource.id);
      }
    }
  }
  return { kickoff: { status: kickoffStatus, contentLocation: statusUrl }, polls, manifest, files, ids };
}

// Kick-off, then cancel (DELETE of the status URL, Bulk Data IG "Delete a Bulk Data Request"),
// then one more poll, whose HTTP error is reported as its status.
async function cancelExport(path, query) {
  const url = query ? `${path}?${query}` : path;
  const kickoff = await client.request(url, { options: { headers: { prefer: 'respond-async' } } });
  const statusUrl = header(kickoff, 'content-location');
  const cancelled = await client.request(statusUrl, { method: 'DELETE' });
  let after;
  try {
    after = Client.httpFor(await client.request(statusUrl)).response.status;
  } catch (error) {
    if (!error.response?.status) throw error;
    after = { status: error.response.status, outcome: error.response.data };
  }
  return { kickoff: { status: Client.httpFor(kickoff).response.status, contentLocation: statusUrl },
    cancel: { status: Client.httpFor(cancelled).response.status, body: cancelled }, after };
}

async function run() {
  switch (command) {
    case 'read':
      return client.read(typeAndId(args[0]));
    case 'search': {
      const searchParams = Object.fromEntries(new URLSearchParams(args[1] ?? ''));
      return allPages(await client.search({ resourceType: args[0], searchParams }));
    }
    case 'transaction':
      return client.transaction({ body: readJson(args[0]) });
    case 'everything': {
      const input = args[1] ? { _count: args[1] } : undefined;
      const first = await client.operation({ name: '$everything', resourceType: 'Patient', id: args[0],
        method: 'GET', input });
      return allPages(first);
    }
    case 'patch':
      return client.patch({ ...typeAndId(args[0]), jsonPatch: JSON.parse(args[1]) });
    case 'create':
      return client.create({ resourceType: args[0], body: readJson(args[1]) });
    case 'operation':
      return client.operation({ name: args[1], ...typeAndId(args[0]), method: 'GET' });
    case 'export':
      return bulkExport(args[0], args[1]);
    case 'export-cancel':
      return cancelExport(args[0], args[1]);
    default:
      throw new Error(`unknown command ${command}`);
  }
}

try {
  const result = await run();
  process.stdout.write(`${JSON.stringify({ ok: true, result })}\n`);
} catch (error) {
  if (error.response?.status) {
    process.stdout.write(`${JSON.stringify({ ok: false, status: error.response.status, outcome: error.response.data })}\n`);
  } else {
    console.error(error);
    process.exit(1);
  }
}
