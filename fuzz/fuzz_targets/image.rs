//! 2D decoding (PNG, JPEG) under every channel and palette option the image route offers: bad
//! input is an error, never a panic or an allocation past the pixel limit. An image that
//! decodes goes through the route's chain on a tiny grid (resize, scale, encode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use medserve::cache::Canonical;
use medserve::imaging::encode::{Format, Payload};
use medserve::imaging::spatial::SpatialAxes;
use medserve::imaging::{ChannelMode, DecodeOptions, PaletteMode, ResizeMode, decode, encode};
use medserve::pipeline::{Chain2d, Scale};

/// 1 Mi pixels: a 16-bit RGBA image at the limit is 16 MB of float32 (the server allows 100 M).
const MAX_PIXELS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let monai = DecodeOptions::monai(MAX_PIXELS);
    // The resize mode varies with the input so each one meets every kind of image.
    let mode = [ResizeMode::Area, ResizeMode::Linear, ResizeMode::Nearest][data.len() % 3];
    for (channels, palette) in [
        (ChannelMode::Native, PaletteMode::Indices),
        (ChannelMode::Native, PaletteMode::Expand),
        (ChannelMode::Luminance, PaletteMode::Indices),
        (ChannelMode::Luminance, PaletteMode::Expand),
    ] {
        let opts = DecodeOptions {
            channels,
            palette,
            ..monai
        };
        let decoded = match decode::decode(data, &opts) {
            Ok(d) => d,
            Err(decode::DecodeError::UnknownFormat) => return,
            Err(_) => continue,
        };
        let info = &decoded.info;
        let (c, h, w) = decoded.data.dim();
        assert_eq!((h, w), (info.height as usize, info.width as usize));
        assert!(h * w <= MAX_PIXELS as usize);
        assert!((1..=4).contains(&c), "{c} channels");
        if channels == ChannelMode::Luminance {
            assert_eq!(c, 1);
        }
        let decoded = decoded.data.into_dyn();
        for scale in [Scale::MinMax, Scale::None] {
            let chain = Chain2d {
                decode: opts,
                size: (8, 8),
                mode,
                scale,
                // Flip and Rotate after the seed's chain, on whatever the decoder made.
                flip: SpatialAxes::all(2),
                rotate: (scale == Scale::MinMax).then_some(0.5),
            };
            let _ = chain.canonical();
            let out = chain.apply(&decoded);
            assert_eq!(out.shape(), [c, 8, 8]);
            // The route's PNG window: [0, 1] after min-max, the values' own range otherwise.
            let payload = Payload {
                image: Some(&out),
                png_window: chain.png_window(&out),
                ..Default::default()
            };
            for format in [Format::Png, Format::F32, Format::Npy] {
                let e = encode::encode(payload, format)
                    .unwrap_or_else(|e| panic!("{format:?} of a decoded image: {e}"));
                assert!(!e.body.is_empty());
            }
        }
        // A 1x1 resize (the smallest size the route accepts) and a PNG of the decoded image.
        let tiny = medserve::imaging::resize::resize(&decoded, &[1, 1], mode);
        assert_eq!(tiny.shape(), [c, 1, 1]);
        // Our 8-bit PNG of the decoded samples decodes to the same samples, when 8 bits hold
        // them (not 16-bit gray above 255, nor the fractional luminance of colour).
        if h * w <= 4096 {
            let png = encode::png8(&decoded, 0.0, 255.0).expect("PNG of a decoded image");
            if decoded.iter().all(|&v| v <= 255.0 && v.fract() == 0.0) {
                let again = decode::decode(&png, &DecodeOptions::monai(MAX_PIXELS))
                    .expect("our PNG decodes");
                assert_eq!(again.data.into_dyn(), decoded, "PNG round trip");
            }
        }
    }
});
