// One session of the official Runware JS SDK against a Kiln server, as a user writes it.
// Usage: node sdk_flow.mjs WS_URL API_KEY MODEL CONTROLNET INPUT_DATA_URI MASK_DATA_URI
// Prints one JSON object: what each call returned (or the error it rejected with).
import { RunwareServer } from "@runware/sdk-js";

const [url, apiKey, model, controlNet, inputImage, maskImage] = process.argv.slice(2);
const runware = new RunwareServer({ apiKey, url, shouldReconnect: false });
const report = {};

async function record(name, call) {
  try {
    report[name] = { ok: await call() };
  } catch (error) {
    report[name] = { error: error?.error ?? error?.message ?? String(error) };
  }
}

const base = { model, width: 128, height: 128, steps: 2, outputType: "base64Data", outputFormat: "PNG" };
await record("images", () => runware.requestImages({
  ...base, positivePrompt: "a red circle on a blue background", numberResults: 2, seed: 4242,
}));
await record("preprocess", () => runware.controlNetPreProcess({
  inputImage, preProcessorType: "canny", outputType: "base64Data",
}));
const guide = report.preprocess.ok?.guideImageUUID;
await record("controlled", () => runware.requestImages({
  ...base, positivePrompt: "a red circle on a blue background", seed: 4242, numberResults: 1,
  controlNet: [{ model: controlNet, guideImage: guide, weight: 1 }],
}));
// the SDK uploads seed and mask images first (imageUpload), then sends their UUIDs
await record("edited", () => runware.requestImages({
  ...base, positivePrompt: "a yellow circle on a blue background", seed: 4242, numberResults: 1,
  seedImage: inputImage, strength: 0.9,
}));
await record("inpainted", () => runware.requestImages({
  ...base, positivePrompt: "a yellow circle on a blue background", seed: 4242, numberResults: 1,
  seedImage: inputImage, maskImage, strength: 1,
}));
await record("search", () => runware.modelSearch({ search: "tiny", category: "controlnet" }));
await record("invalid", () => runware.requestImages({ ...base, positivePrompt: "a red circle", width: 100 }));
await runware.disconnect();
// exit only once the (large) report is flushed: the SDK's timers would keep Node alive
process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(0));
