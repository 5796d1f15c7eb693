"""English speech with phoneme timings from libespeak-ng, called through ctypes (no Python binding needed).

Why ctypes and not the espeak-ng command: the library reports every phoneme with its time in the audio
(espeakEVENT_PHONEME), which is exactly what the mouth targets need. espeak_Initialize is called once per process:
initialising again (or terminating and re-initialising) hangs inside the library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
CHARS_UTF8 = 1
EVENT_PHONEME = 7
EVENT_LIST_TERMINATED = 0
PARAM_RATE = 1
PARAM_PITCH = 3
PARAM_WORDGAP = 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of the utterance
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Phoneme:
    """One espeak phoneme mnemonic ("a", "aI", "p", "_:" for a pause) and its span in seconds."""

    name: str
    start_s: float
    end_s: float


@dataclass
class Utterance:
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    phonemes: list[Phoneme] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class _Espeak:
    """The process-wide library handle; synthesis is serialised because the library keeps global state."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        self.lib = ctypes.CDLL(name)
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.rate = self.lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 200, None, INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT
        )
        if self.rate <= 0:
            raise RuntimeError(f"libespeak-ng: espeak_Initialize failed (returned {self.rate})")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._callback = _CALLBACK(self._on_audio)  # kept referenced: the library calls it later
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _on_audio(self, wav, num_samples, events) -> int:  # noqa: ANN001 - ctypes signature
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        index = 0
        while events[index].type != EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == EVENT_PHONEME:
                self._events.append((event.id.string.decode("utf-8", "replace"), event.audio_position))
            index += 1
        return 0

    def synthesize(self, text: str, voice: str, words_per_minute: int, pitch: int = 50) -> tuple[np.ndarray, list]:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak voice: expected an installed voice name, found {voice!r}")
            self.lib.espeak_SetParameter(PARAM_RATE, int(words_per_minute), 0)
            self.lib.espeak_SetParameter(PARAM_PITCH, int(pitch), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return pcm, list(self._events)


_ENGINE: _Espeak | None = None


def _engine() -> _Espeak:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    return _ENGINE


def synthesize(text: str, voice: str = "en-us", words_per_minute: int = 160, pitch: int = 50) -> Utterance:
    """Speak ``text``; return 16 kHz float32 samples and the phonemes with start/end times in seconds.

    A phoneme ends where the next one starts; the last one ends with the audio.
    """
    import soxr

    engine = _engine()
    pcm, events = engine.synthesize(text, voice, words_per_minute, pitch)
    samples = soxr.resample(pcm.astype(np.float32) / 32768.0, engine.rate, SAMPLE_RATE, "HQ").astype(np.float32)
    duration = len(samples) / SAMPLE_RATE
    phonemes: list[Phoneme] = []
    for index, (name, start_ms) in enumerate(events):
        end_ms = events[index + 1][1] if index + 1 < len(events) else duration * 1000.0
        phonemes.append(Phoneme(name, start_ms / 1000.0, max(start_ms, end_ms) / 1000.0))
    return Utterance(samples, phonemes)


def silence(seconds: float) -> Utterance:
    """A pause: zeros, with one "_" phoneme spanning it so the mouth target knows it is closed."""
    samples = np.zeros(int(round(seconds * SAMPLE_RATE)), np.float32)
    return Utterance(samples, [Phoneme("_", 0.0, len(samples) / SAMPLE_RATE)])


def concatenate(parts: list[Utterance]) -> Utterance:
    """Join utterances end to end, shifting each one's phoneme times by the audio before it."""
    samples, phonemes, offset = [], [], 0.0
    for part in parts:
        samples.append(part.samples)
        phonemes.extend(Phoneme(p.name, p.start_s + offset, p.end_s + offset) for p in part.phonemes)
        offset += part.duration_s
    return Utterance(np.concatenate(samples) if samples else np.zeros(0, np.float32), phonemes)
