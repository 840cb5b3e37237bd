//! The adaptive ladder: which renditions a source becomes. Never upscaled: rungs larger than the source
//! are left out, and a source smaller than every rung gets one rung at its own size.

use serde::{Deserialize, Serialize};

/// One rung as configured: its name, the short side of its picture and its video bitrate at 30 fps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RungSpec {
    pub name: &'static str,
    pub short_side: u32,
    pub kbps: u32,
}

/// The default ladder (H.264 High, AAC 128 kb/s).
pub const DEFAULT_LADDER: [RungSpec; 5] = [
    RungSpec {
        name: "1080p",
        short_side: 1080,
        kbps: 5000,
    },
    RungSpec {
        name: "720p",
        short_side: 720,
        kbps: 2800,
    },
    RungSpec {
        name: "480p",
        short_side: 480,
        kbps: 1400,
    },
    RungSpec {
        name: "360p",
        short_side: 360,
        kbps: 800,
    },
    RungSpec {
        name: "240p",
        short_side: 240,
        kbps: 400,
    },
];

/// x264 presets, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Reads `STREAMGATE_LADDER` (`720p,360p`): names of the default rungs, in any order.
pub fn parse_ladder(text: &str) -> Result<Vec<RungSpec>, String> {
    let mut rungs = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let rung = DEFAULT_LADDER
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| format!("{name:?} is not one of 1080p, 720p, 480p, 360p, 240p"))?;
        if !rungs.contains(rung) {
            rungs.push(*rung);
        }
    }
    if rungs.is_empty() {
        return Err("name at least one rung".into());
    }
    rungs.sort_by_key(|rung| std::cmp::Reverse(rung.short_side));
    Ok(rungs)
}

/// A rendition to make from one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendition {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Target video bitrate, bits per second.
    pub bitrate: u64,
    /// Peak bitrate and decoder buffer, bits (1.5× and 2× the target).
    pub maxrate: u64,
    pub bufsize: u64,
}

fn even(x: f64) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

/// The renditions of a `width`×`height` source at `frame_rate`: the rungs no larger than it, each keeping
/// its aspect ratio with even sides; one rung at the source's own size when it is smaller than them all.
/// Bitrates grow by half above 30 frames per second.
pub fn renditions(ladder: &[RungSpec], width: u32, height: u32, frame_rate: f64) -> Vec<Rendition> {
    let short = width.min(height);
    let long = width.max(height);
    let landscape = width >= height;
    let motion = if frame_rate > 31.0 { 1.5 } else { 1.0 };
    let rendition = |name: String, short_side: u32, kbps: f64| {
        let scaled_long = even(f64::from(short_side) * f64::from(long) / f64::from(short));
        let short_side = even(f64::from(short_side));
        let (w, h) = if landscape {
            (scaled_long, short_side)
        } else {
            (short_side, scaled_long)
        };
        let bitrate = (kbps * motion * 1000.0) as u64;
        Rendition {
            name,
            width: w,
            height: h,
            bitrate,
            maxrate: bitrate * 3 / 2,
            bufsize: bitrate * 2,
        }
    };
    let mut out: Vec<Rendition> = ladder
        .iter()
        .filter(|rung| rung.short_side <= short)
        .map(|rung| rendition(rung.name.to_owned(), rung.short_side, f64::from(rung.kbps)))
        .collect();
    if out.is_empty() {
        // Smaller than every rung: its own size, at the bitrate of the smallest rung scaled by area.
        let smallest = ladder
            .iter()
            .min_by_key(|r| r.short_side)
            .copied()
            .unwrap_or(DEFAULT_LADDER[4]);
        let area = f64::from(short) / f64::from(smallest.short_side);
        out.push(rendition(
            format!("{}p", even(f64::from(short))),
            short,
            f64::from(smallest.kbps) * area * area,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_upscales() {
        let names = |r: Vec<Rendition>| {
            r.into_iter()
                .map(|r| format!("{}:{}x{}", r.name, r.width, r.height))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(renditions(&DEFAULT_LADDER, 1920, 1080, 30.0)),
            [
                "1080p:1920x1080",
                "720p:1280x720",
                "480p:854x480",
                "360p:640x360",
                "240p:426x240"
            ]
        );
        assert_eq!(names(renditions(&DEFAULT_LADDER, 1280, 720, 30.0)).len(), 4);
        // Portrait keeps its orientation.
        assert_eq!(names(renditions(&DEFAULT_LADDER, 720, 1280, 30.0))[0], "720p:720x1280");
        // Smaller than every rung: one rendition at its own size.
        assert_eq!(names(renditions(&DEFAULT_LADDER, 320, 180, 30.0)), ["180p:320x180"]);
    }

    #[test]
    fn bitrates_follow_motion() {
        let at30 = renditions(&DEFAULT_LADDER, 1280, 720, 30.0);
        let at60 = renditions(&DEFAULT_LADDER, 1280, 720, 60.0);
        assert_eq!(at30[0].bitrate, 2_800_000);
        assert_eq!(at60[0].bitrate, 4_200_000);
        assert_eq!(at30[0].maxrate, 4_200_000);
    }

    #[test]
    fn ladders_are_configured_by_name() {
        let ladder = parse_ladder("360p, 720p").expect("valid");
        assert_eq!(ladder.iter().map(|r| r.name).collect::<Vec<_>>(), ["720p", "360p"]);
        assert!(parse_ladder("4k").is_err());
        assert!(parse_ladder(" , ").is_err());
    }
}
