//! Image encoders: decode, (augment), resize, crop, normalise, lay out, run, pool.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{RgbImage, imageops::FilterType};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array2, Array3, Array4, ArrayViewD, Axis};
use ort::session::Session;
use ort::value::TensorRef;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::text::{Provider, open_session_on};
use crate::{BackboneError, Runtime};

/// An image to embed: a file (PNG or JPEG) or pixels already in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// A PNG or JPEG file.
    File(PathBuf),
    /// Row-major 8-bit pixels with 1 (grey) or 3 (RGB) channels.
    Pixels {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// 1 or 3.
        channels: u8,
        /// `width * height * channels` bytes.
        data: Vec<u8>,
    },
}

/// Tensor layout of the graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[batch, channel, height, width]`.
    Nchw,
    /// `[batch, height, width, channel]`.
    Nhwc,
}

/// Element type of the graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelType {
    /// `(value / 255 - mean) / std` per channel.
    Float32,
    /// Raw 0–255 values (the graph normalises).
    Uint8,
}

/// How images become the graph's input tensor (from the registry entry, optionally overridden).
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePreprocess {
    /// The graph input's name.
    pub input: String,
    /// Short side after resizing (bilinear).
    pub resize: u32,
    /// Side of the centre crop after resizing.
    pub crop: u32,
    /// Per-channel mean, on the [0, 1] scale.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, on the [0, 1] scale.
    pub std: [f32; 3],
    /// Input layout.
    pub layout: Layout,
    /// Input element type.
    pub dtype: PixelType,
    /// Feed channels as BGR instead of RGB.
    pub bgr: bool,
}

/// The pixels an image backbone sees before scaling and normalisation: `source` decoded, its short side
/// resized to `resize` (bilinear), centre-cropped to `crop` × `crop`, 8-bit RGB as `[crop, crop, 3]` — the
/// input a merged model exported by graft takes.
pub fn resized_pixels(
    source: &ImageSource,
    resize: u32,
    crop: u32,
) -> Result<Array3<u8>, BackboneError> {
    let image = resize_and_crop(&decode(source)?, resize, crop);
    let (w, h) = image.dimensions();
    Ok(
        Array3::from_shape_vec((h as usize, w as usize, 3), image.into_raw())
            .expect("an RGB image holds height × width × 3 bytes"),
    )
}

/// Training-time augmentation: each extra view of an image is a seeded random resized crop and/or flip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augmentation {
    /// Flip horizontally with probability ½.
    pub horizontal_flip: bool,
    /// Random resized crop: the crop covers this range of the image's area (e.g. `(0.5, 1.0)`); `None` keeps
    /// the whole image.
    pub crop_scale: Option<(f32, f32)>,
}

/// Settings of an [`ImageBackbone`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBackboneConfig {
    /// Preprocessing.
    pub preprocess: ImagePreprocess,
    /// Graph output holding the features (pooled `[N, D]`, or `[N, C, H, W]`, averaged over space).
    pub output: String,
    /// Images per inference call.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads.
    pub intra_threads: usize,
    /// Draw a progress bar.
    pub progress: bool,
    /// Execution provider.
    pub provider: Provider,
}

/// What one [`ImageBackbone::embed`] call did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageExtractionStats {
    /// Images embedded.
    pub rows: usize,
    /// Inference calls.
    pub batches: usize,
    /// Seconds spent decoding and preprocessing.
    pub preprocess_seconds: f64,
    /// Seconds in total.
    pub seconds: f64,
}

/// A frozen image encoder.
pub struct ImageBackbone {
    session: Session,
    config: ImageBackboneConfig,
    model_path: PathBuf,
    provider_used: &'static str,
    fallback_reason: Option<String>,
}

impl std::fmt::Debug for ImageBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageBackbone")
            .field("model", &self.model_path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ImageBackbone {
    /// Opens the graph and checks its input and output names.
    pub fn load(
        runtime: &Runtime,
        model: &Path,
        config: ImageBackboneConfig,
    ) -> Result<ImageBackbone, BackboneError> {
        let invalid = |name, reason: &str| BackboneError::InvalidConfig {
            name,
            reason: reason.to_owned(),
        };
        if config.batch_size == 0 {
            return Err(invalid("batch_size", "must be at least 1"));
        }
        if config.intra_threads == 0 {
            return Err(invalid("threads", "must be at least 1"));
        }
        let p = &config.preprocess;
        if p.crop == 0 || p.resize < p.crop {
            return Err(invalid(
                "image_size",
                "the crop must be at least 1 pixel and no larger than the resized short side",
            ));
        }
        if p.std.iter().any(|s| *s <= 0.0) {
            return Err(invalid("std", "every channel's std must be positive"));
        }
        if !model.is_file() {
            return Err(BackboneError::MissingFile {
                what: "model",
                path: model.to_path_buf(),
            });
        }
        let model_err = |message: String| BackboneError::Model {
            path: model.to_path_buf(),
            message,
        };
        let (session, provider_used, fallback_reason) =
            open_session_on(runtime, model, config.intra_threads, config.provider)?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if !inputs.contains(&p.input.as_str()) {
            return Err(model_err(format!(
                "no input named `{}`; the graph's inputs are: {}",
                p.input,
                inputs.join(", ")
            )));
        }
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if !outputs.contains(&config.output.as_str()) {
            return Err(model_err(format!(
                "no output named `{}`; the graph's outputs are: {}",
                config.output,
                outputs.join(", ")
            )));
        }
        Ok(ImageBackbone {
            session,
            config,
            model_path: model.to_path_buf(),
            provider_used,
            fallback_reason,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &ImageBackboneConfig {
        &self.config
    }

    /// The execution provider the session runs on.
    pub fn execution_provider(&self) -> &'static str {
        self.provider_used
    }

    /// Why CUDA was asked for but the session runs on CPU, if it does.
    pub fn provider_fallback(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Embeds `images`; row `i` belongs to `images[i]`.
    pub fn embed(
        &mut self,
        images: &[ImageSource],
    ) -> Result<(Array2<f32>, ImageExtractionStats), BackboneError> {
        self.embed_views(images, None)
    }

    /// Embeds one augmented view of each image, image `i`'s drawn from a generator seeded with `seeds[i]`, so
    /// the same seeds give the same features.
    pub fn embed_augmented(
        &mut self,
        images: &[ImageSource],
        augmentation: Augmentation,
        seeds: &[u64],
    ) -> Result<(Array2<f32>, ImageExtractionStats), BackboneError> {
        if seeds.len() != images.len() {
            return Err(BackboneError::InvalidConfig {
                name: "seeds",
                reason: format!("{} seeds for {} images", seeds.len(), images.len()),
            });
        }
        self.embed_views(images, Some((augmentation, seeds)))
    }

    fn embed_views(
        &mut self,
        images: &[ImageSource],
        augment: Option<(Augmentation, &[u64])>,
    ) -> Result<(Array2<f32>, ImageExtractionStats), BackboneError> {
        let started = Instant::now();
        let mut stats = ImageExtractionStats {
            rows: images.len(),
            ..ImageExtractionStats::default()
        };
        let bar = if self.config.progress {
            ProgressBar::new(images.len() as u64)
        } else {
            ProgressBar::with_draw_target(Some(images.len() as u64), ProgressDrawTarget::hidden())
        };
        bar.set_style(
            ProgressStyle::with_template(
                "extracting {bar:32.cyan/blue} {human_pos}/{human_len} images  {per_sec}  ETA {eta}",
            )
            .expect("static template"),
        );
        let mut result: Option<Array2<f32>> = None;
        let p = self.config.preprocess.clone();
        for (b, batch) in images.chunks(self.config.batch_size).enumerate() {
            let clock = Instant::now();
            let first = b * self.config.batch_size;
            let pixels: Vec<RgbImage> = batch
                .par_iter()
                .enumerate()
                .map(|(k, source)| {
                    let image = decode(source)?;
                    let image = match augment {
                        Some((aug, seeds)) => {
                            let mut rng = ChaCha8Rng::seed_from_u64(seeds[first + k]);
                            augment_image(image, aug, &mut rng)
                        }
                        None => image,
                    };
                    Ok(resize_and_crop(&image, p.resize, p.crop))
                })
                .collect::<Result<_, BackboneError>>()?;
            stats.preprocess_seconds += clock.elapsed().as_secs_f64();
            let features = self.run_batch(&pixels, &p)?;
            let out = result.get_or_insert_with(|| Array2::zeros((images.len(), features.ncols())));
            out.slice_mut(ndarray::s![first..first + batch.len(), ..])
                .assign(&features);
            stats.batches += 1;
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        stats.seconds = started.elapsed().as_secs_f64();
        Ok((result.unwrap_or_else(|| Array2::zeros((0, 0))), stats))
    }

    fn run_batch(
        &mut self,
        pixels: &[RgbImage],
        p: &ImagePreprocess,
    ) -> Result<Array2<f32>, BackboneError> {
        let outputs = match p.dtype {
            PixelType::Float32 => {
                let tensor = to_tensor_f32(pixels, p);
                self.session.run(ort::inputs![
                    p.input.as_str() => TensorRef::from_array_view(&tensor)?
                ])?
            }
            PixelType::Uint8 => {
                let tensor = to_tensor_u8(pixels, p);
                self.session.run(ort::inputs![
                    p.input.as_str() => TensorRef::from_array_view(&tensor)?
                ])?
            }
        };
        let features = outputs[self.config.output.as_str()].try_extract_array::<f32>()?;
        pooled(features).map_err(|message| BackboneError::Model {
            path: self.model_path.clone(),
            message,
        })
    }
}

/// `[N, D]` passes through; `[N, C, H, W]` is averaged over space.
fn pooled(features: ArrayViewD<'_, f32>) -> Result<Array2<f32>, String> {
    match features.ndim() {
        2 => Ok(features
            .into_dimensionality::<ndarray::Ix2>()
            .expect("checked")
            .to_owned()),
        4 => Ok(features
            .into_dimensionality::<ndarray::Ix4>()
            .expect("checked")
            .mean_axis(Axis(3))
            .and_then(|a| a.mean_axis(Axis(2)))
            .ok_or("an empty feature map")?),
        n => Err(format!(
            "the feature output has {n} dimensions; expected 2 or 4"
        )),
    }
}

/// Decodes a source into 8-bit RGB (grey is replicated into the three channels).
pub(crate) fn decode(source: &ImageSource) -> Result<RgbImage, BackboneError> {
    match source {
        ImageSource::File(path) => {
            let image = image::open(path).map_err(|e| BackboneError::Image {
                path: path.clone(),
                message: e.to_string(),
            })?;
            Ok(image.to_rgb8())
        }
        ImageSource::Pixels {
            width,
            height,
            channels,
            data,
        } => {
            let bad = |message: String| BackboneError::Image {
                path: PathBuf::from("<pixels>"),
                message,
            };
            let expected = *width as usize * *height as usize * usize::from(*channels);
            if data.len() != expected || !matches!(channels, 1 | 3) {
                return Err(bad(format!(
                    "{} bytes for a {width}x{height} image with {channels} channel(s); expected {expected} \
                     bytes and 1 or 3 channels",
                    data.len()
                )));
            }
            if *channels == 3 {
                return Ok(RgbImage::from_raw(*width, *height, data.clone()).expect("size checked"));
            }
            let rgb: Vec<u8> = data.iter().flat_map(|&v| [v, v, v]).collect();
            Ok(RgbImage::from_raw(*width, *height, rgb).expect("size checked"))
        }
    }
}

/// A random resized crop (area share drawn from `crop_scale`, aspect ratio from ¾ to 4⁄3) and/or a flip.
fn augment_image(image: RgbImage, aug: Augmentation, rng: &mut ChaCha8Rng) -> RgbImage {
    let mut image = image;
    if let Some((low, high)) = aug.crop_scale {
        let (w, h) = image.dimensions();
        let area = f64::from(w) * f64::from(h);
        let share = rng.random_range(f64::from(low)..=f64::from(high));
        let log_ratio = rng.random_range((3.0f64 / 4.0).ln()..=(4.0f64 / 3.0).ln());
        let ratio = log_ratio.exp();
        let cw = ((area * share * ratio).sqrt().round() as u32).clamp(1, w);
        let ch = ((area * share / ratio).sqrt().round() as u32).clamp(1, h);
        let x = rng.random_range(0..=w - cw);
        let y = rng.random_range(0..=h - ch);
        let crop = image::imageops::crop_imm(&image, x, y, cw, ch).to_image();
        // Back to the original size, so the usual resize and centre crop see the whole window.
        image = image::imageops::resize(&crop, w, h, FilterType::Triangle);
    }
    if aug.horizontal_flip && rng.random_bool(0.5) {
        image::imageops::flip_horizontal_in_place(&mut image);
    }
    image
}

/// Resizes so that the short side is `resize` (bilinear; unchanged if it already is), then takes the
/// centred `crop` × `crop` square.
pub(crate) fn resize_and_crop(image: &RgbImage, resize: u32, crop: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    let short = w.min(h);
    let resized = if short == resize {
        image.clone()
    } else {
        let scale = f64::from(resize) / f64::from(short);
        let nw = ((f64::from(w) * scale).round() as u32).max(resize);
        let nh = ((f64::from(h) * scale).round() as u32).max(resize);
        let (nw, nh) = if w <= h { (resize, nh) } else { (nw, resize) };
        image::imageops::resize(image, nw, nh, FilterType::Triangle)
    };
    let (w, h) = resized.dimensions();
    let x = (w - crop) / 2;
    let y = (h - crop) / 2;
    image::imageops::crop_imm(&resized, x, y, crop, crop).to_image()
}

fn channel_order(p: &ImagePreprocess) -> [usize; 3] {
    if p.bgr { [2, 1, 0] } else { [0, 1, 2] }
}

/// Normalised float32 tensor in the configured layout.
pub(crate) fn to_tensor_f32(images: &[RgbImage], p: &ImagePreprocess) -> Array4<f32> {
    to_tensor(images, p, |value, channel| {
        (f32::from(value) / 255.0 - p.mean[channel]) / p.std[channel]
    })
}

/// Raw 0–255 tensor in the configured layout.
pub(crate) fn to_tensor_u8(images: &[RgbImage], p: &ImagePreprocess) -> Array4<u8> {
    to_tensor(images, p, |value, _| value)
}

/// Lays images out as the graph wants them: channel order, NCHW or NHWC, each value converted by
/// `convert(value, source channel)`.
fn to_tensor<T: Clone + num_traits::Zero>(
    images: &[RgbImage],
    p: &ImagePreprocess,
    convert: impl Fn(u8, usize) -> T,
) -> Array4<T> {
    let side = p.crop as usize;
    let shape = match p.layout {
        Layout::Nchw => (images.len(), 3, side, side),
        Layout::Nhwc => (images.len(), side, side, 3),
    };
    let mut tensor = Array4::<T>::zeros(shape);
    let order = channel_order(p);
    for (n, image) in images.iter().enumerate() {
        for (x, y, pixel) in image.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            for (c, &source) in order.iter().enumerate() {
                let v = convert(pixel.0[source], source);
                match p.layout {
                    Layout::Nchw => tensor[[n, c, y, x]] = v,
                    Layout::Nhwc => tensor[[n, y, x, c]] = v,
                }
            }
        }
    }
    tensor
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preprocess(layout: Layout, bgr: bool) -> ImagePreprocess {
        ImagePreprocess {
            input: "image".to_owned(),
            resize: 2,
            crop: 2,
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.25, 1.0],
            layout,
            dtype: PixelType::Float32,
            bgr,
        }
    }

    #[test]
    fn grey_pixels_become_three_equal_channels() {
        let grey = ImageSource::Pixels {
            width: 2,
            height: 1,
            channels: 1,
            data: vec![0, 255],
        };
        let rgb = decode(&grey).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
        let wrong = ImageSource::Pixels {
            width: 2,
            height: 2,
            channels: 1,
            data: vec![0; 3],
        };
        assert!(
            decode(&wrong)
                .unwrap_err()
                .to_string()
                .contains("expected 4 bytes")
        );
    }

    #[test]
    fn normalisation_channel_order_and_layout_put_known_values_in_known_places() {
        // Pixel (x=1, y=0) is pure red 255; everything else is (0, 64, 255).
        let mut image = RgbImage::from_pixel(2, 2, image::Rgb([0, 64, 255]));
        image.put_pixel(1, 0, image::Rgb([255, 0, 0]));
        let red = (1.0 - 0.5) / 0.5; // (255/255 - mean) / std, channel R
        let nchw = to_tensor_f32(
            std::slice::from_ref(&image),
            &preprocess(Layout::Nchw, false),
        );
        assert_eq!(nchw.shape(), &[1, 3, 2, 2]);
        assert_eq!(nchw[[0, 0, 0, 1]], red);
        assert_eq!(nchw[[0, 0, 0, 0]], (0.0 - 0.5) / 0.5);
        assert!((nchw[[0, 1, 1, 1]] - (64.0 / 255.0 - 0.25) / 0.25).abs() < 1e-6);
        assert_eq!(nchw[[0, 2, 1, 0]], 1.0);
        let nhwc = to_tensor_f32(
            std::slice::from_ref(&image),
            &preprocess(Layout::Nhwc, true),
        );
        assert_eq!(nhwc.shape(), &[1, 2, 2, 3]);
        // BGR: channel 2 is red.
        assert_eq!(nhwc[[0, 0, 1, 2]], red);
        assert_eq!(nhwc[[0, 0, 1, 0]], 0.0);
        let raw = to_tensor_u8(
            std::slice::from_ref(&image),
            &preprocess(Layout::Nhwc, false),
        );
        assert_eq!(raw[[0, 0, 1, 0]], 255);
        assert_eq!(raw[[0, 1, 0, 1]], 64);
    }

    #[test]
    fn resize_keeps_the_aspect_and_the_crop_is_centred() {
        // A 4x2 image whose columns are 0, 1, 2, 3: resizing the short side to 2 changes nothing, and the
        // centred 2x2 crop keeps columns 1 and 2.
        let image = RgbImage::from_fn(4, 2, |x, _| image::Rgb([x as u8; 3]));
        let out = resize_and_crop(&image, 2, 2);
        assert_eq!(out.dimensions(), (2, 2));
        assert_eq!(out.get_pixel(0, 0).0[0], 1);
        assert_eq!(out.get_pixel(1, 1).0[0], 2);
        // 28x28 grey to short side 256, crop 224: a uniform image stays uniform.
        let uniform = RgbImage::from_pixel(28, 28, image::Rgb([100, 100, 100]));
        let out = resize_and_crop(&uniform, 256, 224);
        assert_eq!(out.dimensions(), (224, 224));
        assert!(out.pixels().all(|p| p.0 == [100, 100, 100]));
        // A wide image: short side 10 → 20, width 30 → 60, then the centre.
        let wide = RgbImage::new(30, 10);
        assert_eq!(resize_and_crop(&wide, 20, 16).dimensions(), (16, 16));
    }

    #[test]
    fn augmentation_is_seeded_and_changes_the_image() {
        let image = RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, 0])
        });
        let aug = Augmentation {
            horizontal_flip: true,
            crop_scale: Some((0.3, 0.6)),
        };
        let a = augment_image(image.clone(), aug, &mut ChaCha8Rng::seed_from_u64(12));
        let b = augment_image(image.clone(), aug, &mut ChaCha8Rng::seed_from_u64(12));
        let c = augment_image(image.clone(), aug, &mut ChaCha8Rng::seed_from_u64(13));
        assert_eq!(a, b);
        assert_ne!(a, image);
        assert_ne!(a, c);
        assert_eq!(a.dimensions(), (16, 16));
    }
}
