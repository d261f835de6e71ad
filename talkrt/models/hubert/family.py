"""HuBERT / Wav2Vec2 / HuBERT-CTC as a talkrt family: speech-encoder graphs and their checkpoint signature."""

from talkrt.models.family import Family, Graph

_PRESETS = "chinese-hubert-base, chinese-hubert-large, hubert-base-ls960, wav2vec2-base-960h, tiny-hubert, tiny-wav2vec2."

FAMILY = Family(
    name="hubert",
    summary="speech encoders through transformers: HuBERT, Wav2Vec2 and HuBERT CTC",
    graphs={
        "hubert": Graph(
            "talkrt.models.hubert.specs:hubert_spec",
            "Hubert speech encoder (transformers HubertModel), dynamic batch and samples.",
            weights="transformers",
            presets=_PRESETS,
            layer=True,
        ),
        "wav2vec2": Graph(
            "talkrt.models.hubert.specs:wav2vec2_spec",
            "Wav2Vec2 speech encoder (transformers Wav2Vec2Model), dynamic batch and samples.",
            weights="transformers",
            presets=_PRESETS,
            layer=True,
        ),
        "hubert-asr": Graph(
            "talkrt.models.hubert.specs:asr_spec",
            "HuBERT CTC recognizer (transformers HubertForCTC, e.g. facebook/hubert-large-ls960-ft): 50 Hz emissions over torchaudio HUBERT_ASR_LARGE's 29 labels.",
            weights="transformers",
            presets="hubert-large-ls960-ft (default) or tiny-hubert-asr (tests).",
        ),
    },
    signatures={"hubert / wav2vec2": frozenset({"feature_extractor", "feature_projection", "encoder"})},
)
