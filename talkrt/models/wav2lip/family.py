"""Wav2Lip as a talkrt family: its graphs, checkpoint signature, renderer and avatar crops."""

from talkrt.models.family import Family, Graph, Role

FAMILY = Family(
    name="wav2lip",
    summary="Wav2Lip: 80 Hz mel windows and the masked + reference 96x96 face",
    graphs={
        "wav2lip": Graph("talkrt.models.wav2lip.specs:wav2lip_spec", "Wav2Lip generator (wav2lip.pth / wav2lip_gan.pth), 96x96, dynamic batch."),
        "mel": Graph(
            "talkrt.models.wav2lip.mel:mel_spec",
            "Wav2Lip log-mel spectrogram: 16 kHz waveform -> 80 mel bins at 80 Hz, dynamic batch and samples (no weights, so no checkpoint).",
            weights="none",
        ),
    },
    signatures={
        "wav2lip": frozenset({"face_encoder_blocks", "audio_encoder", "face_decoder_blocks", "output_block"}),
        "wav2lip syncnet (lip-sync expert)": frozenset({"face_encoder", "audio_encoder"}),
    },
    roles={"generator": Role("wav2lip", "wav2lip")},
    renderer="talkrt.models.wav2lip.renderer:build",
    crop="96x96 boxes",
)
