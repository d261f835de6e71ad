"""DH_live as a talkrt family: its graphs, checkpoint signatures, renderer, options and avatar crops."""

from talkrt.models.family import Family, Graph, OptionFile, Role

FAMILY = Family(
    name="dhlive",
    summary="DH_live: kaldi fbank -> LSTM -> mouth PCA prompt, and the masked 256x256 face with references",
    graphs={
        "dhlive-render": Graph(
            "talkrt.models.dhlive.specs:render_spec",
            "DH_live renderer DINet_five_Ref(6, 30) (render.pth), 256x256, as reference encoder and per-frame generator.",
            variants=("generator", "reference"),
        ),
        "dhlive-audio": Graph(
            "talkrt.models.dhlive.specs:audio_spec", "DH_live Audio2Feature (audio.pkl), one video frame per call with the LSTM state as inputs and outputs."
        ),
    },
    signatures={
        "dhlive-render": frozenset({"source_in_conv", "ref_in_conv", "trans_conv", "appearance_conv_list", "adaAT", "out_conv"}),
        "dhlive-mini v1": frozenset({"source_in_conv", "ref_in_conv", "trans_conv", "appearance_conv", "adaAT", "out_conv"}),
        "dhlive-mini v2": frozenset({"appearance_encoder", "motion_encoder", "decoder_blocks", "final_conv"}),
        "dhlive-audio": frozenset({"downsample", "LSTM", "fc"}),
    },
    roles={
        "generator": Role("dhlive-render", "dhlive-render-generator", {"graph": "generator"}),
        "reference": Role("dhlive-render", "dhlive-render-reference", {"graph": "reference"}),
        "audio": Role("dhlive-audio", "dhlive-audio"),
    },
    renderer="talkrt.models.dhlive.renderer:build",
    options="talkrt.models.dhlive.renderer:DHLiveOptions",
    option_files=(OptionFile("pca", "DH_live's mouth PCA (pca.pkl with --trust-checkpoint, or .npz mean/components); default: a random stand-in"),),
    avatar="talkrt.models.dhlive.avatar:prepare_dhlive",
    crop="256x256 around landmarks",
    shared_weights={"reference": "generator"},  # render.pth holds the reference encoder and the generator
)
