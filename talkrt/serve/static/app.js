// talkrt live page: sends audio (a file, the microphone) or text over WS /v1/stream, plays
// the audio through an AudioContext and draws each frame when the audio clock reaches it.
//
// Clocks. The server stamps every frame (and every audio message of a text utterance) with
// `pts`, a sample index on the session clock at `rate`. An utterance's first frame sits on its
// start; the page maps utterance-relative samples onto the AudioContext's timeline:
//     contextTime(pts) = utterance.anchor + (pts - utterance.start) / rate
// where the anchor is set when the utterance's first frame (or audio) arrives, plus the jitter
// buffer. The audio the page sent (or received) is scheduled on that timeline, and the render
// loop draws the newest frame whose time the audio clock has reached: earlier frames not yet
// drawn are dropped and counted.
"use strict";

const CHUNK_MS = 40;

const params = new URLSearchParams(location.search);
const token = params.get("token");

const $ = (id) => document.getElementById(id);
const ui = {
  server: $("server"), status: $("status"), error: $("error"), canvas: $("video"),
  file: $("file"), playFile: $("play-file"), mic: $("mic"), monitor: $("monitor"),
  textControls: $("text-controls"), voiceNote: $("voice-note"), text: $("text"), speak: $("speak"),
  jitter: $("jitter"), interrupt: $("interrupt"), stop: $("stop"),
  ttff: $("s-ttff"), latency: $("s-latency"), received: $("s-received"), drawn: $("s-drawn"),
  dropped: $("s-dropped"), offset: $("s-offset"), clock: $("s-clock"),
};
const ctx2d = ui.canvas.getContext("2d");

// Everything a test (or a curious person in the console) may read.
const stats = {
  state: "idle", // idle | connecting | ready | closed | error
  session: null, fps: null, sampleRate: null, width: null, height: null, voice: false,
  utterances: 0, samplesSent: 0,
  timeToFirstFrameMs: null, // of the latest utterance: first audio (or text) sent -> first frame received
  frameLatencyMs: null, frameLatencyMeanMs: null, frameLatencyMaxMs: null, latencySamples: 0,
  framesReceived: 0, framesDrawn: 0, framesDropped: 0, framesDiscarded: 0,
  avOffsetMs: null, avOffsetMeanAbsMs: null, avOffsetMaxAbsMs: null, avOffsets: [],
  // The latest drawn frames: {pts, arrivalMs (audio clock minus the frame's time when it arrived:
  // above 0, it came too late to be drawn on time), offsetMs (the same when it was drawn)}.
  drawLog: [],
  audioChunksScheduled: 0, audioSecondsScheduled: 0, audioSecondsReceived: 0, // received: spoken text's
  audioContextState: null, audioContextTime: null,
  errors: [],
};
window.talkrtStats = stats;

let audio = null; // the AudioContext, made on the first user action
let socket = null;
let ready = null; // the server's "ready" message
let readyWaiters = [];
let pendingFrame = null; // a frame header waiting for its JPEG
let pendingAudio = null; // an audio header waiting for its PCM
let utterance = null; // the utterance being sent / shown
let lastPts = null; // the latest accepted frame's pts on the session clock
let nextStart = 0; // where the next utterance starts on the session clock, from the last "end"
let lastFrameArrival = 0;
let frames = []; // decoded frames waiting for their time: {pts, rate, time, bitmap}
let sources = []; // scheduled AudioBufferSourceNodes
let sending = null; // {cancelled} of the file being paced out
let mic = null; // {stream, node, source, sink}
let latencySum = 0;
let offsetSumAbs = 0;

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(text) {
  stats.errors.push(text);
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

function jitterSeconds() {
  const value = Number(ui.jitter.value);
  return Number.isFinite(value) && value >= 0 ? value / 1000 : 0.15;
}

function ensureAudio() {
  if (!audio) {
    audio = new AudioContext({ latencyHint: "interactive" });
  }
  if (audio.state === "suspended") audio.resume();
  return audio;
}

// What the listener hears now, on the AudioContext's timeline: the output timestamp moved on by
// the time since it was taken (smooth between audio callbacks); currentTime without one.
function audioClock() {
  if (!audio) return null;
  if (audio.getOutputTimestamp) {
    const stamp = audio.getOutputTimestamp();
    if (stamp.performanceTime > 0 && stamp.contextTime > 0) {
      return stamp.contextTime + (performance.now() - stamp.performanceTime) / 1000;
    }
  }
  return audio.currentTime;
}

// ---- server ---------------------------------------------------------------------------

// "25", or a ratio such as "30000/1001" (29.97 fps).
function parseFps(text) {
  const [num, den] = String(text).split("/").map(Number);
  const fps = den ? num / den : num;
  return Number.isFinite(fps) && fps > 0 ? fps : 25;
}

async function loadHealth() {
  try {
    const response = await fetch("/healthz", { headers: authHeaders() });
    if (!response.ok) throw new Error(`/healthz answered ${response.status}`);
    const health = await response.json();
    stats.voice = health.voice === true;
    const parts = [];
    for (const key of ["model", "renderer", "backend", "device"]) {
      if (health[key] !== undefined) parts.push(`${key}: ${health[key]}`);
    }
    ui.server.textContent = `Server ready${parts.length ? ` (${parts.join(", ")})` : ""}.`;
    ui.textControls.disabled = !stats.voice;
    ui.voiceNote.textContent = stats.voice ? "" : "(the server has no voice)";
  } catch (error) {
    ui.server.textContent = "The server did not answer /healthz.";
    showError(String(error.message || error));
  }
}

function streamUrl() {
  const url = new URL("/v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function connect() {
  if (ready && socket && socket.readyState === WebSocket.OPEN) return Promise.resolve(ready);
  if (socket && stats.state === "connecting") return new Promise((resolve, reject) => readyWaiters.push({ resolve, reject }));
  stats.state = "connecting";
  setStatus("Opening a session…");
  const promise = new Promise((resolve, reject) => readyWaiters.push({ resolve, reject }));
  socket = new WebSocket(streamUrl());
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: "start", sample_rate: 16000, format: "pcm16", frames: "jpeg" }));
  };
  socket.onmessage = (event) => onMessage(event.data);
  socket.onerror = () => {
    // The close event that follows says what happened.
  };
  socket.onclose = (event) => {
    const wasReady = ready !== null;
    ready = null;
    socket = null;
    if (stats.state !== "error") stats.state = "closed";
    stopSending();
    stopMic();
    updateButtons();
    const reason = event.reason ? `: ${event.reason}` : "";
    if (!wasReady && stats.state !== "error") showError(`The server closed the session (code ${event.code}${reason}).`);
    setStatus(`Session closed (code ${event.code}${reason}).`);
    for (const waiter of readyWaiters) waiter.reject(new Error("the session closed"));
    readyWaiters = [];
  };
  return promise;
}

function onMessage(data) {
  if (typeof data !== "string") {
    onBinary(data);
    return;
  }
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    showError("The server sent a message that is not JSON.");
    return;
  }
  switch (message.type) {
    case "ready":
      ready = message;
      lastPts = null; // a new session's clock starts at 0
      nextStart = 0;
      stats.state = "ready";
      stats.session = message.session;
      stats.fps = parseFps(message.fps);
      stats.sampleRate = message.sample_rate;
      stats.width = message.width;
      stats.height = message.height;
      if (message.width && message.height) {
        ui.canvas.width = message.width;
        ui.canvas.height = message.height;
      }
      setStatus(`Session ${message.session}: ${message.width}x${message.height} at ${message.fps} fps.`);
      for (const waiter of readyWaiters) waiter.resolve(message);
      readyWaiters = [];
      updateButtons();
      break;
    case "frame":
      pendingFrame = message;
      break;
    case "audio":
      pendingAudio = message;
      break;
    case "end":
      // The utterance's last frame has been sent; the next utterance starts at `pts`.
      nextStart = message.pts;
      if (utterance && utterance.start !== null && !utterance.ended) {
        utterance.ended = true;
        setStatus(`Utterance ${stats.utterances} done.`);
      }
      break;
    case "error":
      stats.state = "error";
      showError(`Server error: ${message.reason}`);
      break;
    default:
      break; // newer servers may say more; nothing here depends on it
  }
}

function onBinary(buffer) {
  if (pendingFrame) {
    const header = pendingFrame;
    pendingFrame = null;
    onFrame(header, buffer);
  } else if (pendingAudio) {
    const header = pendingAudio;
    pendingAudio = null;
    onServerAudio(header, buffer);
  }
}

// ---- utterances -----------------------------------------------------------------------

function framePeriodSamples(rate) {
  return Math.round(rate / (stats.fps || 25));
}

// A new utterance starts on the session clock where the last one ended (the "end" message
// says where), or after an interruption on the frame boundary after the last frame sent (the
// server goes on from the frames it sent). Frames before that are stale and discarded.
function newUtterance(kind) {
  stats.utterances += 1;
  utterance = {
    kind,
    earliest: Math.max(nextStart, lastPts === null ? 0 : lastPts + 1),
    start: null, // session pts of its first frame (or audio), once one arrives
    anchor: null, // AudioContext time of `start`
    rate: null,
    sentAt: null, // performance.now() of the first audio / text sent
    chunks: [], // audio sent: {offset, samples, sentAt, pcm (Float32Array) or null}
    sentSamples: 0,
    flushed: false,
    firstFrame: false,
    ended: false,
  };
  return utterance;
}

function setAnchor(u, pts, rate) {
  u.start = pts;
  u.rate = rate;
  u.anchor = ensureAudio().currentTime + jitterSeconds();
  for (const chunk of u.chunks) scheduleChunk(u, chunk);
}

function contextTime(u, pts, rate) {
  return u.anchor + (pts - u.start) / rate;
}

function schedulePcm(u, offsetSamples, samples, rate) {
  if (!samples || samples.length === 0) return;
  const context = ensureAudio();
  const when = u.anchor + offsetSamples / rate;
  const now = context.currentTime;
  const buffer = context.createBuffer(1, samples.length, rate);
  buffer.copyToChannel(samples, 0);
  const source = context.createBufferSource();
  source.buffer = buffer;
  source.connect(context.destination);
  if (when >= now) {
    source.start(when);
  } else if (when + buffer.duration > now) {
    source.start(now, now - when); // partly late: play the rest
  } else {
    return; // all of it is already past
  }
  sources.push(source);
  source.onended = () => {
    sources = sources.filter((s) => s !== source);
  };
  stats.audioChunksScheduled += 1;
  stats.audioSecondsScheduled += buffer.duration;
}

function scheduleChunk(u, chunk) {
  if (chunk.pcm && u.anchor !== null) {
    schedulePcm(u, chunk.offset, chunk.pcm, stats.sampleRate);
    chunk.pcm = null; // the AudioBuffer has it now
  }
}

function pcm16ToFloat(bytes) {
  const view = new DataView(bytes);
  const out = new Float32Array(bytes.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

function floatToPcm16(samples) {
  const bytes = new ArrayBuffer(samples.length * 2);
  const view = new DataView(bytes);
  for (let i = 0; i < samples.length; i++) {
    const x = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(2 * i, x < 0 ? x * 32768 : x * 32767, true);
  }
  return bytes;
}

// Sends one chunk of the current utterance: PCM16 to the server, and keeps the samples to play
// (`play`: null for the microphone unless it is monitored).
function sendChunk(u, pcm16, play) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  const now = performance.now();
  if (u.sentAt === null) u.sentAt = now;
  socket.send(pcm16);
  const samples = pcm16.byteLength >> 1;
  const chunk = { offset: u.sentSamples, samples, sentAt: now, pcm: play };
  u.chunks.push(chunk);
  u.sentSamples += samples;
  stats.samplesSent += samples;
  scheduleChunk(u, chunk);
  return true;
}

function flush(u) {
  if (u.flushed) return;
  u.flushed = true;
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "flush" }));
}

// When the page sent the last input sample that `pts`'s frame shows (the end of its frame period).
function sentTimeOf(u, pts, rate) {
  if (u.chunks.length === 0) return null;
  const sessionRate = stats.sampleRate || rate;
  let needed = Math.ceil(((pts - u.start + framePeriodSamples(rate)) * sessionRate) / rate) - 1;
  needed = Math.min(needed, u.sentSamples - 1);
  let lo = 0;
  let hi = u.chunks.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (u.chunks[mid].offset <= needed) lo = mid;
    else hi = mid - 1;
  }
  return u.chunks[lo].sentAt;
}

function accept(u, pts, rate) {
  // Is this message part of the current utterance? Anchors the utterance on its first one.
  if (!u || pts < u.earliest) return false;
  if (u.start === null) setAnchor(u, pts, rate);
  return pts >= u.start;
}

function onFrame(header, jpeg) {
  const arrival = performance.now();
  lastFrameArrival = arrival;
  const u = utterance;
  const rate = header.rate || stats.sampleRate;
  if (!accept(u, header.pts, rate)) {
    stats.framesDiscarded += 1;
    return;
  }
  stats.framesReceived += 1;
  lastPts = Math.max(lastPts ?? -1, header.pts);
  if (!u.firstFrame) {
    u.firstFrame = true;
    if (u.sentAt !== null) stats.timeToFirstFrameMs = arrival - u.sentAt;
  }
  const sent = u.kind === "text" ? null : sentTimeOf(u, header.pts, rate);
  if (sent !== null) {
    const latency = arrival - sent;
    stats.frameLatencyMs = latency;
    stats.latencySamples += 1;
    latencySum += latency;
    stats.frameLatencyMeanMs = latencySum / stats.latencySamples;
    stats.frameLatencyMaxMs = Math.max(stats.frameLatencyMaxMs ?? latency, latency);
    // Later frames need later audio: forget the send times of chunks a second before this one
    // (a microphone utterance can last for hours).
    const before = (header.pts - u.start) * (stats.sampleRate / rate) - stats.sampleRate;
    let keep = 0;
    while (keep < u.chunks.length - 1 && u.chunks[keep + 1].offset <= before) keep += 1;
    if (keep > 0) u.chunks.splice(0, keep);
  }
  const time = contextTime(u, header.pts, rate);
  const entry = { pts: header.pts, time, arrivalMs: (audioClock() - time) * 1000, bitmap: null };
  frames.push(entry);
  createImageBitmap(new Blob([jpeg], { type: "image/jpeg" })).then(
    (bitmap) => {
      entry.bitmap = bitmap;
    },
    () => {
      frames = frames.filter((f) => f !== entry);
      stats.framesDropped += 1;
      showError("A frame could not be decoded as JPEG.");
    },
  );
}

function onServerAudio(header, bytes) {
  const u = utterance;
  const rate = header.rate || stats.sampleRate;
  if (!accept(u, header.pts, rate)) return;
  if (u.sentAt !== null && u.kind === "text" && !u.firstAudio) u.firstAudio = performance.now() - u.sentAt;
  const samples = pcm16ToFloat(bytes);
  stats.audioSecondsReceived += samples.length / rate;
  schedulePcm(u, header.pts - u.start, samples, rate);
}

// ---- render loop ----------------------------------------------------------------------

function render() {
  requestAnimationFrame(render);
  const clock = audioClock();
  if (clock !== null) {
    stats.audioContextState = audio.state;
    stats.audioContextTime = audio.currentTime;
  }
  if (clock === null || frames.length === 0) return;
  // The newest decoded frame whose time has come; the ones before it are too late to show.
  let due = -1;
  for (let i = 0; i < frames.length; i++) {
    if (frames[i].time > clock) break;
    if (frames[i].bitmap) due = i;
  }
  if (due < 0) return;
  const frame = frames[due];
  stats.framesDropped += due;
  frames = frames.slice(due + 1);
  ctx2d.drawImage(frame.bitmap, 0, 0, ui.canvas.width, ui.canvas.height);
  frame.bitmap.close();
  stats.framesDrawn += 1;
  const offset = (clock - frame.time) * 1000;
  stats.avOffsetMs = offset;
  stats.avOffsets.push(offset);
  if (stats.avOffsets.length > 10000) stats.avOffsets.shift();
  stats.drawLog.push({ pts: frame.pts, arrivalMs: frame.arrivalMs, offsetMs: offset });
  if (stats.drawLog.length > 1000) stats.drawLog.shift();
  offsetSumAbs += Math.abs(offset);
  stats.avOffsetMeanAbsMs = offsetSumAbs / stats.framesDrawn;
  stats.avOffsetMaxAbsMs = Math.max(stats.avOffsetMaxAbsMs ?? 0, Math.abs(offset));
}

function fmt(ms) {
  return ms === null || ms === undefined ? "–" : `${Math.round(ms)} ms`;
}

function refreshNumbers() {
  ui.ttff.textContent = fmt(stats.timeToFirstFrameMs);
  ui.latency.textContent = stats.frameLatencyMs === null ? "–"
    : `${fmt(stats.frameLatencyMs)} / ${fmt(stats.frameLatencyMeanMs)} / ${fmt(stats.frameLatencyMaxMs)}`;
  ui.received.textContent = String(stats.framesReceived);
  ui.drawn.textContent = String(stats.framesDrawn);
  ui.dropped.textContent = String(stats.framesDropped);
  ui.offset.textContent = stats.avOffsetMs === null ? "–"
    : `${fmt(stats.avOffsetMs)} / ${fmt(stats.avOffsetMeanAbsMs)} / ${fmt(stats.avOffsetMaxAbsMs)}`;
  ui.clock.textContent = audio ? `${audio.state}, ${audio.currentTime.toFixed(2)} s` : "–";
}

// ---- inputs ---------------------------------------------------------------------------

// After an interruption, frames the server had already sent may still be on the way: wait
// until none has arrived for a few frame periods, so the next utterance starts after them.
async function settle() {
  const quiet = 4000 / (stats.fps || 25);
  const deadline = performance.now() + 2000;
  while (performance.now() - lastFrameArrival < quiet && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, quiet / 2));
  }
}

async function decodeFile(file, rate) {
  const bytes = await file.arrayBuffer();
  const decoded = await ensureAudio().decodeAudioData(bytes);
  const length = Math.max(1, Math.ceil(decoded.duration * rate));
  const offline = new OfflineAudioContext(1, length, rate); // mono: the channels are mixed down
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return rendered.getChannelData(0);
}

async function sendFile() {
  const file = ui.file.files[0];
  if (!file) return;
  clearError();
  ensureAudio();
  try {
    await endCurrent();
    const session = await connect();
    const rate = session.sample_rate;
    setStatus(`Decoding ${file.name}…`);
    const samples = await decodeFile(file, rate);
    const u = newUtterance("file");
    const job = { cancelled: false };
    sending = job;
    updateButtons();
    setStatus(`Sending ${file.name} (${(samples.length / rate).toFixed(2)} s)…`);
    const chunk = Math.round((rate * CHUNK_MS) / 1000);
    const t0 = performance.now();
    for (let offset = 0; offset < samples.length && !job.cancelled; offset += chunk) {
      // Paced in real time: chunk k leaves when its audio would start playing live.
      const due = t0 + (offset / rate) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      if (job.cancelled) break;
      const part = samples.subarray(offset, Math.min(samples.length, offset + chunk));
      if (!sendChunk(u, floatToPcm16(part), part)) break;
    }
    if (!job.cancelled) {
      flush(u);
      setStatus(`Sent ${file.name}.`);
    }
    if (sending === job) sending = null;
    updateButtons();
  } catch (error) {
    showError(`Could not send the file: ${error.message || error}`);
    sending = null;
    updateButtons();
  }
}

async function startMic() {
  clearError();
  const context = ensureAudio();
  try {
    await endCurrent();
    const session = await connect();
    const rate = session.sample_rate;
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    await context.audioWorklet.addModule(`/static/mic-worklet.js${window.talkrtQuery || ""}`);
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "talkrt-pcm-capture", {
      numberOfInputs: 1, numberOfOutputs: 0,
      processorOptions: { targetRate: rate, chunkSamples: Math.round((rate * CHUNK_MS) / 1000) },
    });
    const u = newUtterance("mic");
    node.port.onmessage = (event) => {
      const bytes = event.data;
      sendChunk(u, bytes, ui.monitor.checked ? pcm16ToFloat(bytes) : null);
    };
    source.connect(node);
    mic = { stream, source, node, utterance: u };
    ui.mic.textContent = "Stop microphone";
    ui.mic.setAttribute("aria-pressed", "true");
    setStatus("Listening to the microphone…");
    updateButtons();
  } catch (error) {
    showError(`Could not use the microphone: ${error.message || error}`);
    stopMic();
  }
}

function stopMic() {
  if (!mic) return;
  mic.source.disconnect();
  mic.node.port.onmessage = null;
  mic.stream.getTracks().forEach((track) => track.stop());
  if (utterance === mic.utterance) flush(mic.utterance);
  mic = null;
  ui.mic.textContent = "Start microphone";
  ui.mic.setAttribute("aria-pressed", "false");
  updateButtons();
}

async function speak() {
  const text = ui.text.value.trim();
  if (!text) return;
  clearError();
  ensureAudio();
  try {
    await endCurrent();
    await connect();
    const u = newUtterance("text");
    u.sentAt = performance.now();
    socket.send(JSON.stringify({ type: "text", text }));
    u.flushed = true;
    setStatus("Speaking…");
    updateButtons();
  } catch (error) {
    showError(`Could not send the text: ${error.message || error}`);
  }
}

function stopSending() {
  if (sending) sending.cancelled = true;
  sending = null;
}

function silenceOutput() {
  for (const source of sources) {
    try {
      source.stop();
    } catch {
      // not started yet or already ended
    }
  }
  sources = [];
  for (const frame of frames) if (frame.bitmap) frame.bitmap.close();
  stats.framesDropped += frames.length; // received, never to be drawn
  frames = [];
}

// Starting a new input while one is still being sent interrupts it.
async function endCurrent() {
  if (sending || mic) {
    interrupt();
    await settle();
  }
}

function interrupt() {
  stopSending();
  if (mic) {
    mic.source.disconnect();
    mic.stream.getTracks().forEach((track) => track.stop());
    mic.node.port.onmessage = null;
    mic = null;
    ui.mic.textContent = "Start microphone";
    ui.mic.setAttribute("aria-pressed", "false");
  }
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "interrupt" }));
  silenceOutput();
  utterance = null;
  setStatus("Interrupted.");
  updateButtons();
}

function stop() {
  stopSending();
  stopMic();
  silenceOutput();
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "stop" }));
    socket.close(1000, "stop");
  }
  utterance = null;
  setStatus("Stopped.");
  updateButtons();
}

function updateButtons() {
  const open = socket !== null;
  ui.playFile.disabled = ui.file.files.length === 0;
  ui.interrupt.disabled = !open;
  ui.stop.disabled = !open;
}

ui.file.addEventListener("change", updateButtons);
ui.playFile.addEventListener("click", sendFile);
ui.mic.addEventListener("click", () => (mic ? stopMic() : startMic()));
ui.speak.addEventListener("click", speak);
ui.interrupt.addEventListener("click", interrupt);
ui.stop.addEventListener("click", stop);

loadHealth();
updateButtons();
requestAnimationFrame(render);
setInterval(refreshNumbers, 200);
