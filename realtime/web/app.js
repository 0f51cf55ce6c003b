// The live page of emotion-serve: microphone -> AudioWorklet (16 kHz int16 frames) -> WebSocket -> one JSON
// message per hop -> the current label, and a chart of the last 60 s. No libraries, no build step, nothing
// fetched from anywhere but the server that served this page.
"use strict";

const WINDOW_S = 60;
const COLOURS = {
  neutral: "#78909c", calm: "#26a69a", happy: "#f9a825", sad: "#1e88e5",
  angry: "#e53935", fearful: "#8e24aa", disgust: "#43a047", surprised: "#ec407a",
};
const SPARE = ["#6d4c41", "#00acc1", "#c0ca33", "#5e35b1", "#f4511e"];
const $ = (id) => document.getElementById(id);

const state = { ws: null, audio: null, media: null, labels: [], hopS: 0.5, hops: [], count: 0, lastSpeaker: null, done: false };

function colour(label, i) {
  return COLOURS[label] || SPARE[i % SPARE.length];
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function start() {
  $("start").disabled = true;
  setStatus("connecting…");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ sample_rate: 16000, speaker_norm: $("adapt").checked }));
  ws.onmessage = (event) => onMessage(JSON.parse(event.data));
  ws.onclose = (event) => {
    if (state.ws === ws) stopAudio();
    $("start").textContent = "Start microphone";
    $("start").disabled = false;
    $("new-speaker").disabled = true;
    if (!state.done && !$("status").classList.contains("error")) setStatus(`disconnected (${event.code})`);
  };
  ws.onerror = () => setStatus("cannot reach emotion-serve", true);
}

async function startAudio() {
  try {
    state.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const audio = new AudioContext();
    state.audio = audio;
    await audio.audioWorklet.addModule("pcm-worklet.js");
    const source = audio.createMediaStreamSource(state.media);
    const node = new AudioWorkletNode(audio, "pcm-downsampler", { numberOfInputs: 1, numberOfOutputs: 0 });
    node.port.onmessage = (event) => {
      if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(event.data);
    };
    source.connect(node);
    await audio.resume();
    setStatus(`listening (microphone at ${audio.sampleRate} Hz, sent at 16 kHz)`);
    $("start").textContent = "Stop";
    $("start").disabled = false;
    $("new-speaker").disabled = false;
  } catch (err) {
    setStatus(`microphone unavailable: ${err.message || err}`, true);
    stop();
  }
}

function stopAudio() {
  if (state.media) state.media.getTracks().forEach((t) => t.stop());
  if (state.audio) state.audio.close();
  state.media = state.audio = null;
}

function stop() {
  stopAudio();
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ end: true }));
  $("start").disabled = true;
}

function onMessage(msg) {
  if (msg.error) {
    setStatus(`server: ${msg.error}`, true);
  } else if (msg.ready) {
    state.done = false;
    state.labels = msg.labels;
    state.hopS = msg.hop_s;
    state.hops = [];
    state.count = 0;
    state.lastSpeaker = msg.speaker;
    $("speaker").textContent = msg.speaker;
    $("legend").innerHTML = "";
    msg.labels.forEach((label, i) => {
      const span = document.createElement("span");
      span.textContent = label;
      span.style.setProperty("--c", colour(label, i));
      $("legend").appendChild(span);
    });
    startAudio();
  } else if (msg.done) {
    state.done = true;
    if (!$("status").classList.contains("error")) setStatus(`stopped: ${msg.hops} hops, ${msg.received_s.toFixed(1)} s heard`);
  } else if (msg.end_s !== undefined) {
    onHop(msg);
  }
}

function onHop(hop) {
  state.count += 1;
  hop.newSpeaker = hop.speaker !== state.lastSpeaker;
  state.lastSpeaker = hop.speaker;
  state.hops.push(hop);
  while (state.hops.length && state.hops[0].end_s < hop.end_s - WINDOW_S - state.hopS) state.hops.shift();
  const label = $("label");
  label.textContent = hop.label;
  label.dataset.label = hop.label;
  label.style.color = hop.speech ? colour(hop.label, state.labels.indexOf(hop.label)) : "#90a4ae";
  $("confidence").textContent = hop.speech ? `confidence ${(100 * hop.confidence).toFixed(0)} %` : "no speech";
  $("confidence-bar").style.width = `${(100 * hop.confidence).toFixed(1)}%`;
  $("speaker").textContent = hop.speaker + (hop.speaker_norm ? ` (${hop.speaker_norm})` : "");
  $("hops").textContent = String(state.count);
  $("dropped").textContent = String(hop.dropped_results);
  $("heard").textContent = `${hop.end_s.toFixed(1)} s`;
  draw();
}

function draw() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, left = 36, right = 8, top = 10, bottom = 24;
  const latest = state.hops.length ? state.hops[state.hops.length - 1].end_s : 0;
  const t0 = Math.max(0, latest - WINDOW_S);
  const x = (t) => left + ((t - t0) / WINDOW_S) * (W - left - right);
  const y = (p) => top + (1 - p) * (H - top - bottom);
  ctx.clearRect(0, 0, W, H);
  ctx.font = "12px system-ui, sans-serif";
  ctx.strokeStyle = "#eceff1";
  ctx.fillStyle = "#777";
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    ctx.beginPath(); ctx.moveTo(left, y(p)); ctx.lineTo(W - right, y(p)); ctx.stroke();
    ctx.fillText(p.toFixed(2), 2, y(p) + 4);
  }
  for (let s = Math.ceil(t0 / 10) * 10; s <= t0 + WINDOW_S; s += 10) ctx.fillText(`${s} s`, x(s) - 8, H - 6);
  // silence: grey bands over the hops without speech
  ctx.fillStyle = "#eceff1";
  for (const hop of state.hops) {
    if (!hop.speech) ctx.fillRect(x(Math.max(t0, hop.end_s - state.hopS)), top, x(hop.end_s) - x(Math.max(t0, hop.end_s - state.hopS)), H - top - bottom);
  }
  // speaker changes: a dashed line and the new id
  ctx.setLineDash([4, 4]);
  ctx.strokeStyle = "#455a64";
  ctx.fillStyle = "#455a64";
  for (const hop of state.hops) {
    if (!hop.newSpeaker || hop.end_s - state.hopS < t0) continue;
    const at = x(hop.end_s - state.hopS);
    ctx.beginPath(); ctx.moveTo(at, top); ctx.lineTo(at, H - bottom); ctx.stroke();
    ctx.fillText(hop.speaker, at + 3, top + 12);
  }
  ctx.setLineDash([]);
  // one line per emotion over the speech hops (broken at silence)
  ctx.lineWidth = 2;
  state.labels.forEach((label, i) => {
    ctx.strokeStyle = colour(label, i);
    ctx.beginPath();
    let drawing = false;
    for (const hop of state.hops) {
      if (!hop.speech || !hop.smoothed || hop.end_s < t0) { drawing = false; continue; }
      const px = x(hop.end_s), py = y(hop.smoothed[label]);
      if (drawing) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      drawing = true;
    }
    ctx.stroke();
  });
  ctx.lineWidth = 1;
}

$("start").addEventListener("click", () => (state.audio || (state.ws && state.ws.readyState <= 1) ? stop() : start()));
$("new-speaker").addEventListener("click", () => {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ new_speaker: true }));
});
draw();
