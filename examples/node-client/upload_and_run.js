#!/usr/bin/env node
// Upload a video to a videodag server through UploadAndRun and print each event as one JSON line.
//
//   node upload_and_run.js --target 127.0.0.1:50051 --pipeline frame_stats_v1 clip.mp4
//
// Events go to stdout, in the order the server sends them: upload_received, video_info, one
// frame per processed frame, summary. With --decode-during-upload the server decodes while the
// upload arrives, and upload_received may come after the first frames. A failed call prints
// {"error": {...}} to stderr (code, name, message, and from the error's details its reason,
// domain, metadata, field_violations and retry_after_seconds) and exits with the gRPC status
// code (5 for NOT_FOUND, 3 for INVALID_ARGUMENT, ...); bad usage exits 64.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "protos");
const SERVICE_PROTO = "videodag/v1/video_pipeline_service.proto";
const DEFAULT_CHUNK_SIZE = 256 * 1024;
const USAGE_EXIT_CODE = 64;

function loadService(protoRoot) {
  // google/rpc/status.proto is vendored beside the contract; the well-known google/protobuf
  // types come with proto-loader itself.
  const definition = protoLoader.loadSync(SERVICE_PROTO, {
    includeDirs: [protoRoot, path.join(protoRoot, "third_party", "googleapis")],
    keepCase: true,
    longs: Number, // frame indexes and byte counts fit easily in a double
    enums: String,
    defaults: true, // frame 0 must still carry "frame_index": 0
    oneofs: true, // each message gets a virtual field naming its set oneof member
  });
  return grpc.loadPackageDefinition(definition).videodag.v1.VideoPipelineService;
}

// The error details the server sends (google/rpc/status.proto and error_details.proto of
// googleapis), as far as this client reads them: a google.rpc.Status in the
// grpc-status-details-bin trailer, its details packed in Any.
const ERROR_TYPES = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: "int32", id: 1 },
                message: { type: "string", id: 2 },
                details: { rule: "repeated", type: "google.protobuf.Any", id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: "string", id: 1 },
                domain: { type: "string", id: 2 },
                metadata: { keyType: "string", type: "string", id: 3 },
              },
            },
            BadRequest: {
              fields: { field_violations: { rule: "repeated", type: "FieldViolation", id: 1 } },
              nested: {
                FieldViolation: { fields: { field: { type: "string", id: 1 }, description: { type: "string", id: 2 } } },
              },
            },
            RetryInfo: {
              fields: { retry_delay: { type: "Duration", id: 1 } },
              nested: { Duration: { fields: { seconds: { type: "int64", id: 1 }, nanos: { type: "int32", id: 2 } } } },
            },
          },
        },
      },
    },
  },
});

// What the status trailer adds to code and message: the ErrorInfo's reason (stable, for
// programs to test), its domain and metadata, the bad fields, how long to wait before a retry.
function errorDetails(metadata) {
  const [trailer] = (metadata && metadata.get("grpc-status-details-bin")) || [];
  if (!trailer) return {};
  const status = ERROR_TYPES.lookupType("google.rpc.Status").decode(trailer);
  const found = {};
  for (const detail of status.details) {
    const kind = detail.type_url.split("/").pop();
    if (!["google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo"].includes(kind)) continue;
    const type = ERROR_TYPES.lookupType(kind);
    const value = type.toObject(type.decode(detail.value), { longs: Number, defaults: true });
    if (kind === "google.rpc.ErrorInfo") Object.assign(found, value);
    if (kind === "google.rpc.BadRequest") found.field_violations = value.field_violations;
    if (kind === "google.rpc.RetryInfo") found.retry_after_seconds = durationSeconds(value.retry_delay);
  }
  return found;
}

// google.protobuf.Value -> plain JSON value (proto-loader leaves Struct in its wire shape).
function valueToJson(value) {
  switch (value.kind) {
    case "structValue":
      return structToJson(value.structValue);
    case "listValue":
      return (value.listValue.values || []).map(valueToJson);
    case "nullValue":
    case undefined:
      return null;
    default:
      return value[value.kind];
  }
}

function structToJson(struct) {
  const fields = (struct && struct.fields) || {};
  return Object.fromEntries(Object.entries(fields).map(([key, value]) => [key, valueToJson(value)]));
}

function durationSeconds(duration) {
  return duration ? Number(duration.seconds || 0) + (duration.nanos || 0) / 1e9 : 0;
}

// One server event -> {"event": name, name: {...}} with Structs as JSON and Durations in seconds.
function eventToJson(response) {
  const name = response.event;
  const body = { ...response[name] };
  for (const [key, value] of Object.entries(body)) {
    if (value && typeof value === "object" && "seconds" in value && "nanos" in value) {
      body[key] = durationSeconds(value);
    }
  }
  if (name === "frame") {
    body.result = structToJson(body.result);
  } else if (name === "summary" && body.node_timings) {
    body.node_timings = body.node_timings.map((timing) => ({
      ...timing,
      total_time: durationSeconds(timing.total_time),
    }));
  }
  return { event: name, [name]: body };
}

// Config first, then the file's bytes in order; waits for the call to drain when its buffer is full.
async function sendUpload(call, videoPath, config, chunkSize) {
  call.write({ config });
  const stream = fs.createReadStream(videoPath, { highWaterMark: chunkSize });
  try {
    for await (const chunk of stream) {
      if (call.writableEnded || call.destroyed) return; // the server already ended the call
      if (!call.write({ chunk })) {
        await new Promise((resolve) => call.once("drain", resolve));
      }
    }
  } finally {
    stream.destroy();
  }
  call.end();
}

// A whole number as written, sign included: parseInt would read "abc" as NaN, sent as 0
// (every frame), and "5x" as 5. The server judges the range (a negative stride, say).
function wholeNumber(flag, text) {
  if (!/^-?\d+$/.test(text)) {
    throw new Error(`${flag} takes a whole number, got ${JSON.stringify(text)}`);
  }
  return Number.parseInt(text, 10);
}

function parseCommandLine(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      target: { type: "string", default: "127.0.0.1:50051" },
      pipeline: { type: "string" },
      stride: { type: "string", default: "1" },
      "max-frames": { type: "string", default: "0" },
      "chunk-size": { type: "string", default: String(DEFAULT_CHUNK_SIZE) },
      "decode-during-upload": { type: "boolean", default: false },
      "proto-root": { type: "string", default: PROTO_ROOT },
    },
  });
  if (positionals.length !== 1 || !values.pipeline) {
    throw new Error("usage: upload_and_run.js --pipeline ID [--target HOST:PORT] [--stride N] " +
      "[--max-frames N] [--chunk-size BYTES] [--decode-during-upload] [--proto-root DIR] VIDEO");
  }
  return {
    target: values.target,
    pipelineId: values.pipeline,
    frameStride: wholeNumber("--stride", values.stride),
    maxFrames: wholeNumber("--max-frames", values["max-frames"]),
    chunkSize: wholeNumber("--chunk-size", values["chunk-size"]),
    decodeDuringUpload: values["decode-during-upload"],
    protoRoot: values["proto-root"],
    videoPath: positionals[0],
  };
}

function main() {
  let options;
  try {
    options = parseCommandLine(process.argv.slice(2));
    fs.accessSync(options.videoPath, fs.constants.R_OK);
  } catch (error) {
    console.error(error.message);
    process.exit(USAGE_EXIT_CODE);
  }
  const VideoPipelineService = loadService(options.protoRoot);
  const client = new VideoPipelineService(options.target, grpc.credentials.createInsecure());
  const call = client.UploadAndRun();

  // A reader that stops early (`| head`) closes stdout: stop the call quietly, as a shell tool would.
  process.stdout.on("error", (error) => {
    if (error.code !== "EPIPE") throw error;
    call.cancel();
    process.exit(0);
  });
  call.on("data", (response) => process.stdout.write(JSON.stringify(eventToJson(response)) + "\n"));
  call.on("error", (error) => {
    const name = grpc.status[error.code] || "UNKNOWN";
    const details = errorDetails(error.metadata);
    console.error(JSON.stringify({ error: { code: error.code, name, message: error.details, ...details } }));
    process.exitCode = error.code || 2;
    client.close();
  });
  call.on("end", () => client.close());

  const config = {
    pipeline_id: options.pipelineId,
    file_name: path.basename(options.videoPath),
    declared_size_bytes: fs.statSync(options.videoPath).size,
    decode_during_upload: options.decodeDuringUpload,
    options: { frame_stride: options.frameStride, max_frames: options.maxFrames },
  };
  // A refused call (unknown pipeline, limits) surfaces through the "error" handler above.
  sendUpload(call, options.videoPath, config, options.chunkSize).catch(() => {});
}

module.exports = { errorDetails, eventToJson, structToJson };

if (require.main === module) {
  main();
}
