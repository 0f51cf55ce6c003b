// AudioWorklet: the microphone's float samples (at the AudioContext's rate) -> 16 kHz int16 frames of ~100 ms,
// posted to the page, which sends them to emotion-serve as binary WebSocket messages.
// Downsampling: a low-pass (windowed sinc at 0.45 x 16 kHz) evaluated at each output instant, so any input
// rate works (48 kHz, 44.1 kHz...); at 16 kHz the samples pass through unchanged.

const OUT_RATE = 16000;
const FRAME_SAMPLES = 1600; // 100 ms at 16 kHz
const HALF_TAPS = 16; // filter half-width, in input samples (scaled by the ratio)

class PcmDownsampler extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / OUT_RATE; // input samples per output sample
    this.half = this.ratio > 1 ? Math.ceil(HALF_TAPS * this.ratio) : 0;
    this.cutoff = 0.45 / Math.max(this.ratio, 1); // cycles per input sample
    this.history = new Float32Array(0); // input samples not yet consumed (with filter context)
    this.next = 0; // position of the next output sample in `history`, in input samples
    this.out = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.out[this.filled++] = v < 0 ? Math.round(v * 32768) : Math.round(v * 32767);
    if (this.filled === FRAME_SAMPLES) {
      this.port.postMessage(this.out.buffer, [this.out.buffer]);
      this.out = new Int16Array(FRAME_SAMPLES);
      this.filled = 0;
    }
  }

  sample(t) {
    // Low-passed value at fractional input position t (Blackman-windowed sinc).
    const h = this.history;
    const lo = Math.ceil(t - this.half), hi = Math.floor(t + this.half);
    let sum = 0, norm = 0;
    for (let i = lo; i <= hi; i++) {
      const x = i - t;
      const w = 0.42 + 0.5 * Math.cos((Math.PI * x) / this.half) + 0.08 * Math.cos((2 * Math.PI * x) / this.half);
      const arg = 2 * Math.PI * this.cutoff * x;
      const k = w * (arg === 0 ? 1 : Math.sin(arg) / arg);
      sum += k * h[i];
      norm += k;
    }
    return sum / norm;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    const mono = new Float32Array(n);
    for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i] / channels.length;
    if (this.ratio === 1) {
      for (let i = 0; i < n; i++) this.emit(mono[i]);
      return true;
    }
    const joined = new Float32Array(this.history.length + n);
    joined.set(this.history);
    joined.set(mono, this.history.length);
    this.history = joined;
    if (this.next === 0) this.next = this.half; // the first output needs `half` samples of past context
    while (this.next + this.half < this.history.length) {
      this.emit(this.sample(this.next));
      this.next += this.ratio;
    }
    const drop = Math.max(0, Math.floor(this.next) - this.half);
    this.history = this.history.slice(drop);
    this.next -= drop;
    return true;
  }
}

registerProcessor("pcm-downsampler", PcmDownsampler);
