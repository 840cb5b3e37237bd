//! HLS and DASH manifests over one set of CMAF segments.

use std::fmt::Write;

/// One segment as its chunk playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub uri: String,
    pub duration: f64,
}

/// The segments of an ffmpeg HLS playlist, in order.
pub fn read_playlist(text: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut pending: Option<f64> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let duration = rest.split(',').next().unwrap_or_default();
            pending = Some(duration.parse().map_err(|_| format!("bad EXTINF {line:?}"))?);
        } else if !line.starts_with('#') {
            let duration = pending
                .take()
                .ok_or_else(|| format!("segment {line:?} without EXTINF"))?;
            segments.push(Segment {
                uri: line.to_owned(),
                duration,
            });
        }
    }
    Ok(segments)
}

/// A media playlist: VOD, fMP4 with its init segment, ended; with `key_uri`, its segments are AES-128
/// encrypted under the key there (the init segment, declared before the key, is clear).
pub fn media_playlist(segments: &[Segment], key_uri: Option<&str>) -> String {
    let target = segments.iter().map(|s| s.duration).fold(0.0, f64::max).ceil() as u64;
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    out.push_str("#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    out.push_str("#EXT-X-MAP:URI=\"init.mp4\"\n");
    if let Some(uri) = key_uri {
        let _ = writeln!(out, "#EXT-X-KEY:METHOD=AES-128,URI=\"{uri}\"");
    }
    for segment in segments {
        let _ = writeln!(out, "#EXTINF:{:.6},\n{}", segment.duration, segment.uri);
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// A rendition as the manifests announce it.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Peak and average bits per second of the segments.
    pub peak: u64,
    pub average: u64,
    pub codecs: String,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub peak: u64,
    pub average: u64,
    pub segments: Vec<Segment>,
}

/// The HLS master playlist: one variant per rendition (largest first), each with the audio group.
pub fn master_playlist(variants: &[Variant], audio: Option<&Audio>, frame_rate: f64) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    if audio.is_some() {
        out.push_str(
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"Audio\",LANGUAGE=\"und\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\"\n",
        );
    }
    for variant in variants {
        let (peak, average, codecs) = match audio {
            Some(audio) => (
                variant.peak + audio.peak,
                variant.average + audio.average,
                format!("{},mp4a.40.2", variant.codecs),
            ),
            None => (variant.peak, variant.average, variant.codecs.clone()),
        };
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},RESOLUTION={}x{},CODECS=\"{codecs}\",FRAME-RATE={frame_rate:.3}",
            variant.width, variant.height
        );
        if audio.is_some() {
            out.push_str(",AUDIO=\"aac\"");
        }
        let _ = writeln!(out, "\n{}/index.m3u8", variant.name);
    }
    out
}

/// `PT12.345S`.
fn iso_duration(seconds: f64) -> String {
    format!("PT{seconds:.3}S")
}

/// A `SegmentTimeline` in milliseconds, runs of equal durations folded with `r`.
fn timeline(segments: &[Segment]) -> String {
    let mut out = String::from("<SegmentTimeline>");
    let mut t = 0u64;
    let mut runs: Vec<(u64, u64, u32)> = Vec::new();
    for segment in segments {
        let d = (segment.duration * 1000.0).round() as u64;
        match runs.last_mut() {
            Some((_, last, repeat)) if *last == d => *repeat += 1,
            _ => runs.push((t, d, 0)),
        }
        t += d;
    }
    for (start, d, repeat) in runs {
        if repeat > 0 {
            let _ = write!(out, "<S t=\"{start}\" d=\"{d}\" r=\"{repeat}\"/>");
        } else {
            let _ = write!(out, "<S t=\"{start}\" d=\"{d}\"/>");
        }
    }
    out.push_str("</SegmentTimeline>");
    out
}

fn template(folder: &str, segments: &[Segment]) -> String {
    let first = segments
        .first()
        .and_then(|s| {
            s.uri
                .trim_start_matches("seg-")
                .trim_end_matches(".m4s")
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    format!(
        "<SegmentTemplate timescale=\"1000\" initialization=\"{folder}/init.mp4\" media=\"{folder}/seg-$Number%05d$.m4s\" startNumber=\"{first}\">{}</SegmentTemplate>",
        timeline(segments)
    )
}

/// A static DASH MPD over the same segments as the HLS playlists.
pub fn mpd(variants: &[Variant], audio: Option<&Audio>, duration: f64, frame_rate: f64) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"static\" mediaPresentationDuration=\"{}\" minBufferTime=\"PT4S\">",
        iso_duration(duration)
    );
    out.push_str("<Period id=\"0\" start=\"PT0S\">\n");
    let max_width = variants.iter().map(|v| v.width).max().unwrap_or(0);
    let max_height = variants.iter().map(|v| v.height).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "<AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\" maxWidth=\"{max_width}\" maxHeight=\"{max_height}\" frameRate=\"{}\">",
        frame_rate_fraction(frame_rate)
    );
    for variant in variants {
        let _ = writeln!(
            out,
            "<Representation id=\"{}\" bandwidth=\"{}\" width=\"{}\" height=\"{}\" sar=\"1:1\" codecs=\"{}\">{}</Representation>",
            variant.name,
            variant.peak,
            variant.width,
            variant.height,
            variant.codecs,
            template(&variant.name, &variant.segments)
        );
    }
    out.push_str("</AdaptationSet>\n");
    if let Some(audio) = audio {
        let _ = writeln!(
            out,
            "<AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"und\" segmentAlignment=\"true\" startWithSAP=\"1\"><Representation id=\"audio\" bandwidth=\"{}\" codecs=\"mp4a.40.2\" audioSamplingRate=\"48000\"><AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"2\"/>{}</Representation></AdaptationSet>",
            audio.peak,
            template("audio", &audio.segments)
        );
    }
    out.push_str("</Period>\n</MPD>\n");
    out
}

/// `30000/1001` for 29.97, `30` for 30.
fn frame_rate_fraction(rate: f64) -> String {
    for base in [24.0, 30.0, 60.0] {
        if (rate - base * 1000.0 / 1001.0).abs() < 0.005 {
            return format!("{}/1001", (base * 1000.0) as u64);
        }
    }
    if (rate - rate.round()).abs() < 0.005 {
        format!("{}", rate.round() as u64)
    } else {
        format!("{}/1000", (rate * 1000.0).round() as u64)
    }
}

/// The `avc1.PPCCLL` codecs string of an fMP4 init segment, from its `avcC` box.
pub fn avc_codecs(init: &[u8]) -> Option<String> {
    let at = init.windows(4).position(|w| w == b"avcC")?;
    let config = init.get(at + 4..at + 8)?;
    // configurationVersion, AVCProfileIndication, profile_compatibility, AVCLevelIndication
    (config[0] == 1).then(|| format!("avc1.{:02x}{:02x}{:02x}", config[1], config[2], config[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.000000,\nseg-00003.m4s\n#EXTINF:2.500000,\nseg-00004.m4s\n#EXT-X-ENDLIST\n";

    #[test]
    fn reads_and_writes_media_playlists() {
        let segments = read_playlist(CHUNK).expect("valid");
        assert_eq!(segments.len(), 2);
        assert_eq!(
            segments[1],
            Segment {
                uri: "seg-00004.m4s".into(),
                duration: 2.5
            }
        );
        let playlist = media_playlist(&segments, None);
        assert!(playlist.contains("#EXT-X-TARGETDURATION:4\n"));
        assert!(playlist.contains("#EXT-X-MAP:URI=\"init.mp4\"\n"));
        assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
        assert!(!playlist.contains("EXT-X-KEY"));
        let sealed = media_playlist(&segments, Some("/v1/keys/abc"));
        let map = sealed.find("#EXT-X-MAP").expect("map");
        let key = sealed
            .find("#EXT-X-KEY:METHOD=AES-128,URI=\"/v1/keys/abc\"\n")
            .expect("key");
        assert!(map < key && key < sealed.find("#EXTINF").expect("segments"));
        assert!(read_playlist("#EXTM3U\nseg.m4s\n").is_err());
    }

    #[test]
    fn timelines_fold_equal_durations() {
        let segments: Vec<Segment> = [4.0, 4.0, 4.0, 2.0]
            .iter()
            .enumerate()
            .map(|(i, d)| Segment {
                uri: format!("seg-{i:05}.m4s"),
                duration: *d,
            })
            .collect();
        assert_eq!(
            timeline(&segments),
            "<SegmentTimeline><S t=\"0\" d=\"4000\" r=\"2\"/><S t=\"12000\" d=\"2000\"/></SegmentTimeline>"
        );
        assert_eq!(frame_rate_fraction(29.97), "30000/1001");
        assert_eq!(frame_rate_fraction(25.0), "25");
    }

    #[test]
    fn codecs_come_from_the_init_segment() {
        let init = [b"....avcC".as_slice(), &[1, 0x64, 0x00, 0x1f, 0xff]].concat();
        assert_eq!(avc_codecs(&init).as_deref(), Some("avc1.64001f"));
        assert_eq!(avc_codecs(b"no box here"), None);
    }
}
