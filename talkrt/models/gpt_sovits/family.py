"""GPT-SoVITS v2 as a talkrt family: the GPT (prefill + step with in-graph sampling) and SoVITS
graphs exported as one directory, and the signatures of its two checkpoint kinds."""

from talkrt.models.family import Family, Graph

FAMILY = Family(
    name="gpt_sovits",
    summary="GPT-SoVITS v2 text to speech: GPT prefill | GPT step (sampling on the device) | SoVITS decoder",
    graphs={
        "gpt-sovits": Graph(
            "talkrt.models.gpt_sovits.specs:gpt_sovits_spec",
            "GPT-SoVITS v2 as graphs: GPT prefill, GPT step (sampler inside, static shapes), SoVITS decoder, reference style, "
            "semantic latent, the v2Pro speaker network, plus the hubert graph. --checkpoint is a directory with the GPT .ckpt, "
            "the SoVITS .pth, optionally chinese-hubert-base/, and for v2Pro / v2ProPlus sv/pretrained_eres2netv2w24s4ep4.ckpt.",
            weights="directory",
            presets="v2, v2Pro, v2ProPlus (released sizes) or tiny, tiny-pro (tests), with --random-init.",
            exporter="talkrt.models.gpt_sovits.specs:export_gpt_sovits",
            builder="talkrt.models.gpt_sovits.synth:build_gpt_sovits_engines",
        ),
    },
    voice="talkrt.models.gpt_sovits.voice",
    signatures={
        # GPT .ckpt keys under the Lightning "model." prefix (which guess_family looks through)
        "gpt-sovits GPT (s1)": frozenset({"bert_proj", "ar_text_embedding", "ar_text_position", "ar_audio_embedding", "ar_audio_position", "h", "ar_predict_layer"}),
        "gpt-sovits SoVITS (s2)": frozenset({"enc_p", "dec", "flow", "ref_enc", "ssl_proj", "quantizer"}),
        # v2Pro's speaker-verification network (ERes2NetV2, speaker.py), a plain state_dict
        "gpt-sovits speaker verification (sv)": frozenset({"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "layer3_ds", "fuse34", "seg_1"}),
        # the BERT whose third-to-last layer gives the phone features (chinese-roberta-wwm-ext-large, BertForMaskedLM)
        "gpt-sovits BERT (chinese-roberta)": frozenset({"bert", "cls"}),
    },
)
