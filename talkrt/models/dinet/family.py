"""DINet as a talkrt family: its graphs, checkpoint signature, renderer, options and avatar crops."""

from talkrt.models.dinet.asr import ASR_GRAPH
from talkrt.models.family import Family, Graph, OptionFile, Role

FAMILY = Family(
    name="dinet",
    summary="DINet: 25 Hz DeepSpeech-like windows and the masked 416x320 face with 5 references",
    graphs={
        "dinet": Graph("talkrt.models.dinet.specs:dinet_spec", "DINet(3, 15, 29) renderer (clip_training_DINet_256mouth.pth), 416x320 face, exact 4-D AdaAT."),
        "dinet-mapper": Graph(
            "talkrt.models.dinet.specs:mapper_spec", "DINet_optimized's audio mapping MLP (wav2vecDS.pt): 25 Hz CTC emissions -> DeepSpeech-like features."
        ),
    },
    signatures={"dinet": frozenset({"source_in_conv", "ref_in_conv", "trans_conv", "audio_encoder", "appearance_conv_list", "adaAT", "out_conv"})},
    roles={"generator": Role("dinet", "dinet"), "asr": Role(ASR_GRAPH, ASR_GRAPH), "mapper": Role("dinet-mapper", "dinet-mapper")},
    renderer="talkrt.models.dinet.renderer:build",
    options="talkrt.models.dinet.renderer:DINetOptions",
    option_files=(OptionFile("features", "precomputed 25 Hz DeepSpeech features, (frames, 29) .npy; default: the " + ASR_GRAPH + " + dinet-mapper graphs"),),
    avatar="talkrt.models.dinet.avatar:prepare_dinet",
    crop="416x320 around landmarks",
)
