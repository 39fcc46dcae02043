#!/usr/bin/env node
// A ringserve client in Node.js from the .proto files alone: no generated code, no Python.
//
//   node examples/node/client.js TARGET IMAGE [--collection NAME] [--id ID] [--protos DIR]
//
// Calls Inference.Extract with one image per message, then Search.Index puts that image into a
// collection under ID and Search.Search looks for it by the same image. Prints one JSON line:
// the feature's length and dtype, who served it (provenance), and the search's top id and score.
// TARGET is a router started with --search-redis-url (ringserve-up starts one), e.g. localhost:50050.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const USAGE = 'usage: node client.js TARGET IMAGE [--collection NAME] [--id ID] [--protos DIR]';
const BYTES_PER_VALUE = { float16: 2, float32: 4 };
const DEADLINE_MS = 60_000;

function parseArgs(argv) {
  const options = { collection: 'node-example', id: null, protos: path.resolve(__dirname, '..', '..', 'protos') };
  const positional = [];
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === '-h' || flag === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (flag === '--collection' || flag === '--id' || flag === '--protos') {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value\n${USAGE}`);
      options[flag.slice(2)] = argv[(i += 1)];
    } else {
      positional.push(flag);
    }
  }
  if (positional.length !== 2) throw new Error(USAGE);
  [options.target, options.image] = positional;
  options.id = options.id || path.basename(options.image);
  return options;
}

// Every file is loaded by its import path under protos/, which is all a loader needs (includeDirs).
function loadServices(protosDir) {
  const files = ['ringserve/v1/inference.proto', 'ringserve/v1/search.proto'];
  for (const file of files) {
    if (!fs.existsSync(path.join(protosDir, file))) {
      throw new Error(`${file} not found under ${protosDir}: pass --protos with the repository's protos/ folder`);
    }
  }
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protosDir],
    keepCase: true, // field names as in the .proto (request_id), not camelCase
    longs: String, // uint64 (stale_ms) and fixed64 (phash) would lose precision as JS numbers
    enums: String, // provenance.source as "SOURCE_COMPUTED"
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).ringserve.v1;
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

function checkStatus(what, status) {
  if (status && status.code !== 0) {
    throw new Error(`${what}: item status ${status.code} (gRPC code): ${status.message}`);
  }
}

// One item on a bidirectional stream (Extract, Index): write it, end our side, take the one reply.
function oneItem(stub, method, request) {
  return new Promise((resolve, reject) => {
    const call = stub[method]({ deadline: deadline() });
    let reply = null;
    call.on('data', (message) => {
      reply = message;
    });
    call.on('error', reject);
    call.on('end', () => (reply ? resolve(reply) : reject(new Error(`${method}: the stream ended with no reply`))));
    call.write(request);
    call.end();
  });
}

function unary(stub, method, request) {
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline: deadline() }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const v1 = loadServices(options.protos);
  const image = fs.readFileSync(options.image);
  const credentials = grpc.credentials.createInsecure();
  const inference = new v1.Inference(options.target, credentials);
  const search = new v1.Search(options.target, credentials);
  try {
    const extracted = await oneItem(inference, 'Extract', { request_id: '1', image });
    checkStatus('Extract', extracted.status);
    const { feature, provenance } = extracted;
    const length = feature.data.length / BYTES_PER_VALUE[feature.dtype];
    const shapeLength = feature.shape.reduce((a, b) => a * b, 1);
    if (length !== shapeLength) {
      throw new Error(`Extract: ${feature.data.length} bytes of ${feature.dtype} do not fill shape [${feature.shape}]`);
    }

    const indexed = await oneItem(search, 'Index', {
      request_id: '1', collection: options.collection, id: options.id, image,
    });
    checkStatus('Index', indexed.status);
    const found = await unary(search, 'Search', { collection: options.collection, image, k: 1 });
    const top = found.nearest[0] || null;

    console.log(JSON.stringify({
      feature_length: length,
      dtype: feature.dtype,
      provenance: {
        source: provenance.source,
        node: provenance.node,
        model: provenance.model,
        model_version: provenance.model_version,
      },
      collection: options.collection,
      indexed_id: indexed.id,
      top_id: top && top.id,
      top_score: top && top.score,
    }));
  } finally {
    inference.close();
    search.close();
  }
}

main().catch((err) => {
  console.error(`client.js: ${err.message}`);
  process.exit(1);
});
