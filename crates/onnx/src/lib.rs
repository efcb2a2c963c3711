//! A small ONNX writer: build a graph of standard operators from ndarray weights, save it as a model of its
//! own, or append it to an existing model (a frozen backbone) so that one `.onnx` file runs end to end.
//!
//! It writes the protobuf wire format directly (no code generation, no `protoc`). A backbone is copied
//! through field by field without being decoded, so operators, attributes and weights this crate knows
//! nothing about survive untouched; only the graph's inputs and outputs are replaced, and backbone nodes
//! that no longer feed any output are pruned.
//!
//! ```
//! use graft_onnx::{Attribute, Dim, ElementType, Graph, ValueInfo, standalone_model};
//! use ndarray::array;
//!
//! // probabilities = softmax(features · W + b)
//! let mut g = Graph::new(13, "head/");
//! let w = g.constant("weights", array![[1.0f32, -1.0], [0.5, 0.5]].view().into_dyn());
//! let b = g.constant("bias", array![0.0f32, 0.1].view().into_dyn());
//! let scores = g.node("MatMul", &["features", &w], &[]);
//! let logits = g.node("Add", &[&scores, &b], &[]);
//! g.node_into("Softmax", &[&logits], &[("axis", Attribute::Int(1))], "probabilities");
//! let batch = || Dim::Named("batch".into());
//! let model = standalone_model(
//!     &g,
//!     &[ValueInfo::new("features", ElementType::Float, vec![batch(), Dim::Fixed(2)])],
//!     &[ValueInfo::new("probabilities", ElementType::Float, vec![batch(), Dim::Fixed(2)])],
//!     &[("classes".into(), "[\"a\",\"b\"]".into())],
//! );
//! let parsed = graft_onnx::OnnxModel::parse(&model)?;
//! assert_eq!(parsed.opset(), 13);
//! assert_eq!(parsed.outputs()[0].name, "probabilities");
//! # Ok::<(), graft_onnx::OnnxError>(())
//! ```

mod bert;
mod mpnet;
mod wire;

pub use bert::{BertGraph, Q4Table, bert_model, bert_model_q4_words};
pub use mpnet::{MpnetGraph, mpnet_model};

use std::collections::HashSet;

use ndarray::ArrayViewD;
use thiserror::Error;

use wire::{Message, fields};

/// What can go wrong reading or merging a model.
#[derive(Debug, Error)]
pub enum OnnxError {
    /// The bytes are not an ONNX model this crate can read.
    #[error("not a readable ONNX model: {0}")]
    Malformed(String),
    /// The model is valid but cannot be merged as asked.
    #[error("{0}")]
    Unsupported(String),
}

/// Tensor element types graft reads and writes (ONNX `TensorProto.DataType` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    /// 32-bit float.
    Float,
    /// 8-bit unsigned integer.
    Uint8,
    /// 64-bit signed integer.
    Int64,
    /// Boolean.
    Bool,
    /// Any other type, by its code.
    Other(i32),
}

impl ElementType {
    fn code(self) -> i32 {
        match self {
            ElementType::Float => 1,
            ElementType::Uint8 => 2,
            ElementType::Int64 => 7,
            ElementType::Bool => 9,
            ElementType::Other(c) => c,
        }
    }

    fn from_code(code: i32) -> ElementType {
        match code {
            1 => ElementType::Float,
            2 => ElementType::Uint8,
            7 => ElementType::Int64,
            9 => ElementType::Bool,
            c => ElementType::Other(c),
        }
    }
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A known size.
    Fixed(i64),
    /// A symbolic size (e.g. `batch`).
    Named(String),
    /// Unknown.
    Unknown,
}

/// A graph input or output: name, element type, shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub element: ElementType,
    /// Shape (`None` when the model declares no shape).
    pub dims: Option<Vec<Dim>>,
}

impl ValueInfo {
    /// A tensor with a declared shape.
    pub fn new(name: impl Into<String>, element: ElementType, dims: Vec<Dim>) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            element,
            dims: Some(dims),
        }
    }

    /// Element type and shape for people: `float32 [batch, tokens, 384]` (`?` for an unknown dimension; no
    /// brackets when the model declares no shape).
    pub fn type_text(&self) -> String {
        let element = match self.element {
            ElementType::Float => "float32".to_owned(),
            ElementType::Uint8 => "uint8".to_owned(),
            ElementType::Int64 => "int64".to_owned(),
            ElementType::Bool => "bool".to_owned(),
            ElementType::Other(code) => format!("type {code}"),
        };
        let Some(dims) = &self.dims else {
            return element;
        };
        let dims: Vec<String> = dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => n.to_string(),
                Dim::Named(s) => s.clone(),
                Dim::Unknown => "?".to_owned(),
            })
            .collect();
        format!("{element} [{}]", dims.join(", "))
    }

    /// Rank, if the shape is declared.
    pub fn rank(&self) -> Option<usize> {
        self.dims.as_ref().map(Vec::len)
    }

    fn encode(&self) -> Message {
        let mut tensor = Message::default();
        tensor.int(1, i64::from(self.element.code()));
        if let Some(dims) = &self.dims {
            let mut shape = Message::default();
            for d in dims {
                let mut dim = Message::default();
                match d {
                    Dim::Fixed(v) => {
                        dim.int(1, *v);
                    }
                    Dim::Named(s) => {
                        dim.string(2, s);
                    }
                    Dim::Unknown => {}
                }
                shape.message(1, &dim);
            }
            tensor.message(2, &shape);
        }
        let mut ty = Message::default();
        ty.message(1, &tensor);
        let mut info = Message::default();
        info.string(1, &self.name).message(2, &ty);
        info
    }

    fn decode(data: &[u8]) -> Result<ValueInfo, OnnxError> {
        let bad = || OnnxError::Malformed("a graph input or output is not a ValueInfoProto".into());
        let mut info = ValueInfo {
            name: String::new(),
            element: ElementType::Other(0),
            dims: None,
        };
        for f in fields(data).ok_or_else(bad)? {
            match f.number {
                1 => info.name = f.string().ok_or_else(bad)?,
                2 => {
                    // TypeProto.tensor_type
                    let ty = fields(f.bytes().ok_or_else(bad)?).ok_or_else(bad)?;
                    for t in ty.iter().filter(|t| t.number == 1) {
                        for tf in fields(t.bytes().ok_or_else(bad)?).ok_or_else(bad)? {
                            match tf.number {
                                1 => {
                                    info.element =
                                        ElementType::from_code(tf.varint().ok_or_else(bad)? as i32)
                                }
                                2 => {
                                    let mut dims = Vec::new();
                                    for d in fields(tf.bytes().ok_or_else(bad)?).ok_or_else(bad)? {
                                        let mut dim = Dim::Unknown;
                                        for v in
                                            fields(d.bytes().ok_or_else(bad)?).ok_or_else(bad)?
                                        {
                                            match v.number {
                                                1 => {
                                                    dim = Dim::Fixed(
                                                        v.varint().ok_or_else(bad)? as i64
                                                    )
                                                }
                                                2 => dim = Dim::Named(v.string().ok_or_else(bad)?),
                                                _ => {}
                                            }
                                        }
                                        dims.push(dim);
                                    }
                                    info.dims = Some(dims);
                                }
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

/// A node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    /// `INT`
    Int(i64),
    /// `FLOAT`
    Float(f32),
    /// `INTS`
    Ints(Vec<i64>),
}

/// Nodes and weights being built, in the order they are added (which must be a topological order).
#[derive(Debug, Clone)]
pub struct Graph {
    opset: i64,
    prefix: String,
    nodes: Vec<Message>,
    /// Tensors each node reads and writes (pruning and name checks).
    node_io: Vec<(Vec<String>, Vec<String>)>,
    initializers: Vec<Message>,
    initializer_names: Vec<String>,
    counter: usize,
}

impl Graph {
    /// An empty graph for operator set `opset` of the default domain; every name it makes up starts with
    /// `prefix`, so two graphs with different prefixes never collide.
    pub fn new(opset: i64, prefix: &str) -> Graph {
        Graph {
            opset,
            prefix: prefix.to_owned(),
            nodes: Vec::new(),
            node_io: Vec::new(),
            initializers: Vec::new(),
            initializer_names: Vec::new(),
            counter: 0,
        }
    }

    /// The operator set version the nodes are written for.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{}{hint}_{}", self.prefix, self.counter)
    }

    fn push_initializer(
        &mut self,
        name: String,
        dims: &[usize],
        code: i32,
        raw: Vec<u8>,
    ) -> String {
        let mut t = Message::default();
        for &d in dims {
            t.int(1, d as i64);
        }
        t.int(2, i64::from(code)).string(8, &name).bytes(9, &raw);
        self.initializers.push(t);
        self.initializer_names.push(name.clone());
        name
    }

    /// A float32 weight tensor; returns its name.
    pub fn constant(&mut self, hint: &str, values: ArrayViewD<'_, f32>) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dims = values.shape().to_vec();
        self.push_initializer(name, &dims, ElementType::Float.code(), raw)
    }

    /// An int64 tensor of shape `dims` (`&[]` for a scalar); returns its name.
    pub fn constant_i64(&mut self, hint: &str, values: &[i64], dims: &[usize]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, dims, ElementType::Int64.code(), raw)
    }

    /// A uint8 tensor of shape `dims`; returns its name.
    pub fn constant_u8(&mut self, hint: &str, values: &[u8], dims: &[usize]) -> String {
        let name = self.fresh(hint);
        self.push_initializer(name, dims, ElementType::Uint8.code(), values.to_vec())
    }

    /// A float32 scalar; returns its name.
    pub fn scalar(&mut self, hint: &str, value: f32) -> String {
        let name = self.fresh(hint);
        self.push_initializer(
            name,
            &[],
            ElementType::Float.code(),
            value.to_le_bytes().to_vec(),
        )
    }

    /// Adds a node with one output, named here; returns that name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: &[(&str, Attribute)]) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.node_into(op, inputs, attributes, &output);
        output
    }

    /// Adds a node with one output called `output` (a graph output, say).
    pub fn node_into(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: &[(&str, Attribute)],
        output: &str,
    ) {
        let mut n = Message::default();
        for i in inputs {
            n.string(1, i);
        }
        n.string(2, output);
        let name = self.fresh(op);
        n.string(3, &name).string(4, op);
        for (key, value) in attributes {
            let mut a = Message::default();
            a.string(1, key);
            match value {
                Attribute::Float(v) => {
                    a.float(2, *v).int(20, 1);
                }
                Attribute::Int(v) => {
                    a.int(3, *v).int(20, 2);
                }
                Attribute::Ints(vs) => {
                    for v in vs {
                        a.int(8, *v);
                    }
                    a.int(20, 7);
                }
            }
            n.message(5, &a);
        }
        self.nodes.push(n);
        self.node_io.push((
            inputs.iter().map(|s| (*s).to_owned()).collect(),
            vec![output.to_owned()],
        ));
    }

    /// `ReduceSum`/`ReduceMean`/… over `axes`, written the way the graph's operator set expects (axes as an
    /// attribute before opset 13 for ReduceSum and before 18 for the others, as an input after).
    pub fn reduce(&mut self, op: &str, input: &str, axes: &[i64], keep_dims: bool) -> String {
        let axes_as_input = if op == "ReduceSum" {
            self.opset >= 13
        } else {
            self.opset >= 18
        };
        let keep = ("keepdims", Attribute::Int(i64::from(keep_dims)));
        if axes_as_input {
            let a = self.constant_i64("axes", axes, &[axes.len()]);
            self.node(op, &[input, &a], &[keep])
        } else {
            self.node(
                op,
                &[input],
                &[("axes", Attribute::Ints(axes.to_vec())), keep],
            )
        }
    }

    /// Tensors the nodes read that no node of this graph (or weight of it) provides.
    fn external_inputs(&self) -> Vec<String> {
        let mut produced: HashSet<&str> =
            self.initializer_names.iter().map(String::as_str).collect();
        let mut needed = Vec::new();
        for (inputs, outputs) in &self.node_io {
            for i in inputs {
                if !i.is_empty() && !produced.contains(i.as_str()) && !needed.contains(i) {
                    needed.push(i.clone());
                }
            }
            produced.extend(outputs.iter().map(String::as_str));
        }
        needed
    }

    fn produced(&self) -> impl Iterator<Item = &String> {
        self.initializer_names
            .iter()
            .chain(self.node_io.iter().flat_map(|(_, o)| o))
    }
}

const IR_VERSION: i64 = 7;

fn opset_import(version: i64) -> Message {
    let mut m = Message::default();
    m.string(1, "").int(2, version);
    m
}

fn metadata_entry(key: &str, value: &str) -> Message {
    let mut m = Message::default();
    m.string(1, key).string(2, value);
    m
}

/// A model made of `graph` alone (IR version 7, which ONNX Runtime has read since 1.6).
pub fn standalone_model(
    graph: &Graph,
    inputs: &[ValueInfo],
    outputs: &[ValueInfo],
    metadata: &[(String, String)],
) -> Vec<u8> {
    let mut g = Message::default();
    for n in &graph.nodes {
        g.message(1, n);
    }
    g.string(2, "graft");
    for t in &graph.initializers {
        g.message(5, t);
    }
    for i in inputs {
        g.message(11, &i.encode());
    }
    for o in outputs {
        g.message(12, &o.encode());
    }
    let mut m = Message::default();
    m.int(1, IR_VERSION)
        .string(2, "graft")
        .string(3, env!("CARGO_PKG_VERSION"))
        .message(7, &g)
        .message(8, &opset_import(graph.opset));
    for (k, v) in metadata {
        m.message(14, &metadata_entry(k, v));
    }
    m.0
}

/// One node of a parsed graph: its encoding and the tensors it reads and writes.
#[derive(Debug, Clone)]
struct ParsedNode {
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// Whether an attribute holds a subgraph (which may read outer tensors without listing them).
    has_subgraph: bool,
}

/// What a serialized model holds, read without decoding its weights: see [`GraphSummary::read`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphSummary {
    /// The name and dimensions of every weight (initializer), those in an external data file included.
    /// A text model's position limit, for example, is the first dimension of its position-embedding table.
    pub initializers: Vec<(String, Vec<i64>)>,
    /// The operator types of the main graph's nodes (e.g. `MatMul`, `DynamicQuantizeLinear`).
    pub operators: std::collections::BTreeSet<String>,
}

impl GraphSummary {
    /// The rows of the graph's position-embedding table (an initializer named `…position_embedding…` of
    /// rank 2, quantised or not), i.e. the longest token sequence a text model reads; `None` when the graph
    /// has no such table (relative positions).
    pub fn position_limit(&self) -> Option<usize> {
        self.initializers
            .iter()
            .filter(|(name, dims)| name.contains("position_embedding") && dims.len() == 2)
            .filter_map(|(_, dims)| usize::try_from(dims[0]).ok())
            .min()
    }

    /// Reads the summary of a serialized model.
    pub fn read(bytes: &[u8]) -> Result<GraphSummary, OnnxError> {
        let malformed = |what: &str| OnnxError::Malformed(what.to_owned());
        let model = fields(bytes).ok_or_else(|| malformed("the file is not a protobuf message"))?;
        let graph = model
            .iter()
            .find(|f| f.number == 7)
            .and_then(|f| f.bytes())
            .ok_or_else(|| malformed("the model has no graph"))?;
        let graph = fields(graph).ok_or_else(|| malformed("the graph is truncated"))?;
        let mut summary = GraphSummary::default();
        for f in &graph {
            let message = || f.bytes().and_then(fields);
            match f.number {
                1 => {
                    let node = message().ok_or_else(|| malformed("node"))?;
                    if let Some(op) = node.iter().find(|x| x.number == 4).and_then(|x| x.string()) {
                        summary.operators.insert(op);
                    }
                }
                5 => {
                    let tensor = message().ok_or_else(|| malformed("initializer"))?;
                    let mut name = String::new();
                    let mut dims = Vec::new();
                    for t in &tensor {
                        match (t.number, t.value) {
                            (1, wire::Value::Varint(d)) => dims.push(d as i64),
                            // `repeated int64 dims` may also be written packed.
                            (1, wire::Value::Bytes(packed)) => dims.extend(
                                wire::varints(packed)
                                    .ok_or_else(|| malformed("dims"))?
                                    .into_iter()
                                    .map(|d| d as i64),
                            ),
                            (8, _) => name = t.string().unwrap_or_default(),
                            _ => {}
                        }
                    }
                    summary.initializers.push((name, dims));
                }
                _ => {}
            }
        }
        Ok(summary)
    }
}

/// An existing model, read without decoding its weights.
#[derive(Debug, Clone)]
pub struct OnnxModel<'a> {
    model_fields: Vec<wire::Field<'a>>,
    graph_fields: Vec<wire::Field<'a>>,
    nodes: Vec<ParsedNode>,
    initializers: Vec<(String, &'a [u8])>,
    ir_version: i64,
    opset: i64,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
}

impl<'a> OnnxModel<'a> {
    /// Reads the model's structure (graph inputs, outputs, nodes, operator sets).
    pub fn parse(bytes: &'a [u8]) -> Result<OnnxModel<'a>, OnnxError> {
        let malformed = |what: &str| OnnxError::Malformed(what.to_owned());
        let model_fields =
            fields(bytes).ok_or_else(|| malformed("the file is not a protobuf message"))?;
        let mut ir_version = 0;
        let mut opset = None;
        let mut graph = None;
        for f in &model_fields {
            match f.number {
                1 => ir_version = f.varint().ok_or_else(|| malformed("ir_version"))? as i64,
                7 => graph = f.bytes(),
                8 => {
                    let entry = fields(f.bytes().ok_or_else(|| malformed("opset_import"))?)
                        .ok_or_else(|| malformed("opset_import"))?;
                    let domain = entry
                        .iter()
                        .find(|e| e.number == 1)
                        .and_then(|e| e.string())
                        .unwrap_or_default();
                    let version = entry
                        .iter()
                        .find(|e| e.number == 2)
                        .and_then(|e| e.varint());
                    if domain.is_empty() || domain == "ai.onnx" {
                        opset = version.map(|v| v as i64);
                    }
                }
                _ => {}
            }
        }
        let graph = graph.ok_or_else(|| malformed("the model has no graph"))?;
        let graph_fields = fields(graph).ok_or_else(|| malformed("the graph is truncated"))?;
        let mut nodes = Vec::new();
        let mut initializers = Vec::new();
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for f in &graph_fields {
            match f.number {
                1 => nodes.push(parse_node(f.bytes().ok_or_else(|| malformed("node"))?)?),
                5 => {
                    let data = f.bytes().ok_or_else(|| malformed("initializer"))?;
                    let t = fields(data).ok_or_else(|| malformed("initializer"))?;
                    let name = t
                        .iter()
                        .find(|x| x.number == 8)
                        .and_then(|x| x.string())
                        .unwrap_or_default();
                    // data_location = EXTERNAL: the weights live in another file.
                    if t.iter().any(|x| x.number == 14 && x.varint() == Some(1)) {
                        return Err(OnnxError::Unsupported(format!(
                            "weight `{name}` is stored in an external data file; merging needs a \
                             single-file model"
                        )));
                    }
                    initializers.push((name, f.encoded));
                }
                11 => inputs.push(ValueInfo::decode(
                    f.bytes().ok_or_else(|| malformed("input"))?,
                )?),
                12 => outputs.push(ValueInfo::decode(
                    f.bytes().ok_or_else(|| malformed("output"))?,
                )?),
                _ => {}
            }
        }
        // Before IR 4, weights were also listed as graph inputs; they are not inputs a caller feeds.
        let weight_names: HashSet<&str> = initializers.iter().map(|(n, _)| n.as_str()).collect();
        inputs.retain(|i| !weight_names.contains(i.name.as_str()));
        Ok(OnnxModel {
            model_fields,
            graph_fields,
            nodes,
            initializers,
            ir_version,
            opset: opset
                .ok_or_else(|| malformed("the model imports no default-domain operator set"))?,
            inputs,
            outputs,
        })
    }

    /// `producer_name` and `producer_version`, joined by a space.
    pub fn producer(&self) -> String {
        let strings: Vec<String> = [2, 3]
            .iter()
            .filter_map(|n| self.model_fields.iter().find(|f| f.number == *n))
            .filter_map(|f| f.string())
            .collect();
        strings.join(" ")
    }

    /// The model's `metadata_props`, in file order.
    pub fn metadata(&self) -> Vec<(String, String)> {
        self.model_fields
            .iter()
            .filter(|f| f.number == 14)
            .filter_map(|f| {
                let entry = fields(f.bytes()?)?;
                let get = |n: u32| {
                    entry
                        .iter()
                        .find(|e| e.number == n)
                        .and_then(|e| e.string())
                };
                Some((get(1)?, get(2).unwrap_or_default()))
            })
            .collect()
    }

    /// The model's IR version.
    pub fn ir_version(&self) -> i64 {
        self.ir_version
    }

    /// The default-domain operator set version.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// Inputs a caller feeds (weights excluded).
    pub fn inputs(&self) -> &[ValueInfo] {
        &self.inputs
    }

    /// Outputs.
    pub fn outputs(&self) -> &[ValueInfo] {
        &self.outputs
    }

    /// Appends graphs to this model: `prelude`'s nodes run before the backbone (they produce the backbone
    /// inputs named in `replaced_inputs`, which stop being model inputs), `tail`'s after it (reading
    /// backbone tensors by name). The merged model's inputs are the backbone's remaining ones plus
    /// `new_inputs`; its outputs are `outputs` only. Backbone nodes that feed none of them are dropped.
    /// `metadata` is added to the model's metadata properties.
    pub fn merge(
        &self,
        prelude: Option<&Graph>,
        replaced_inputs: &[&str],
        tail: &Graph,
        new_inputs: &[ValueInfo],
        outputs: &[ValueInfo],
        metadata: &[(String, String)],
    ) -> Result<Vec<u8>, OnnxError> {
        for g in prelude.into_iter().chain([tail]) {
            if g.opset != self.opset {
                return Err(OnnxError::Unsupported(format!(
                    "graph written for opset {} but the model uses opset {}",
                    g.opset, self.opset
                )));
            }
        }
        // Names the backbone already uses must not be reused by the appended graphs.
        let mut backbone_names: HashSet<&str> =
            self.initializers.iter().map(|(n, _)| n.as_str()).collect();
        backbone_names.extend(self.inputs.iter().map(|i| i.name.as_str()));
        for n in &self.nodes {
            backbone_names.extend(n.outputs.iter().map(String::as_str));
        }
        for g in prelude.into_iter().chain([tail]) {
            if let Some(clash) = g.produced().find(|name| {
                backbone_names.contains(name.as_str()) && !replaced_inputs.contains(&name.as_str())
            }) {
                return Err(OnnxError::Unsupported(format!(
                    "the tensor name `{clash}` is already used by the model"
                )));
            }
        }
        for r in replaced_inputs {
            if !self.inputs.iter().any(|i| i.name == *r) {
                return Err(OnnxError::Unsupported(format!(
                    "the model has no input `{r}`"
                )));
            }
        }

        // Backward from what the tail reads: the backbone nodes (and weights) still needed.
        let tail_produced: HashSet<&String> = tail.produced().collect();
        let mut needed: HashSet<String> = tail.external_inputs().into_iter().collect();
        needed.extend(
            outputs
                .iter()
                .map(|o| o.name.clone())
                .filter(|n| !tail_produced.contains(n)),
        );
        let prune = !self.nodes.iter().any(|n| n.has_subgraph);
        let mut keep = vec![!prune; self.nodes.len()];
        if prune {
            for (i, node) in self.nodes.iter().enumerate().rev() {
                if node.outputs.iter().any(|o| needed.contains(o)) {
                    keep[i] = true;
                    needed.extend(node.inputs.iter().filter(|s| !s.is_empty()).cloned());
                }
            }
        }
        let kept_outputs: HashSet<&str> = self
            .nodes
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .flat_map(|(n, _)| n.outputs.iter().map(String::as_str))
            .collect();

        let mut g = Message::default();
        if let Some(p) = prelude {
            for n in &p.nodes {
                g.message(1, n);
            }
            for t in &p.initializers {
                g.message(5, t);
            }
        }
        let (mut node_index, mut initializer_index) = (0, 0);
        let removed_inputs: HashSet<&str> = replaced_inputs.iter().copied().collect();
        for f in &self.graph_fields {
            match f.number {
                1 => {
                    if keep[node_index] {
                        g.raw(f.encoded);
                    }
                    node_index += 1;
                }
                5 => {
                    let name = &self.initializers[initializer_index].0;
                    initializer_index += 1;
                    if !prune || self.ir_version < 4 || needed.contains(name) {
                        g.raw(f.encoded);
                    }
                }
                11 => {
                    let info = ValueInfo::decode(f.bytes().unwrap_or_default())?;
                    if !removed_inputs.contains(info.name.as_str()) {
                        g.raw(f.encoded);
                    }
                }
                // The backbone's outputs are replaced.
                12 => {}
                13 => {
                    let info = ValueInfo::decode(f.bytes().unwrap_or_default())?;
                    if kept_outputs.contains(info.name.as_str()) {
                        g.raw(f.encoded);
                    }
                }
                _ => {
                    g.raw(f.encoded);
                }
            }
        }
        for n in &tail.nodes {
            g.message(1, n);
        }
        for t in &tail.initializers {
            g.message(5, t);
        }
        for i in new_inputs {
            g.message(11, &i.encode());
        }
        for o in outputs {
            g.message(12, &o.encode());
        }

        Ok(self.model_around(&g, metadata))
    }

    /// The model fields around a new graph: graft made the merged model, so it is the producer; the
    /// backbone's producer is kept as metadata, and `metadata` added.
    fn model_around(&self, g: &Message, metadata: &[(String, String)]) -> Vec<u8> {
        let mut m = Message::default();
        let mut backbone_producer = Vec::new();
        for f in &self.model_fields {
            match f.number {
                7 => {
                    m.message(7, g);
                }
                2 | 3 => backbone_producer.extend(f.string()),
                _ => {
                    m.raw(f.encoded);
                }
            }
        }
        m.string(2, "graft").string(3, env!("CARGO_PKG_VERSION"));
        if !backbone_producer.is_empty() {
            m.message(
                14,
                &metadata_entry("graft.backbone_producer", &backbone_producer.join(" ")),
            );
        }
        for (k, v) in metadata {
            m.message(14, &metadata_entry(k, v));
        }
        m.0
    }
}

fn parse_node(data: &[u8]) -> Result<ParsedNode, OnnxError> {
    let bad = || OnnxError::Malformed("a node is not a NodeProto".into());
    let mut node = ParsedNode {
        inputs: Vec::new(),
        outputs: Vec::new(),
        has_subgraph: false,
    };
    for f in fields(data).ok_or_else(bad)? {
        match f.number {
            1 => node.inputs.push(f.string().ok_or_else(bad)?),
            2 => node.outputs.push(f.string().ok_or_else(bad)?),
            5 => {
                let attribute = fields(f.bytes().ok_or_else(bad)?).ok_or_else(bad)?;
                // AttributeProto.g (6) and .graphs (11)
                if attribute.iter().any(|a| a.number == 6 || a.number == 11) {
                    node.has_subgraph = true;
                }
            }
            _ => {}
        }
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ndarray::array;

    use super::*;

    /// Which node (by position) produces each tensor.
    fn node_outputs(model: &OnnxModel<'_>) -> HashMap<String, usize> {
        model
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.clone(), i)))
            .collect()
    }

    fn batch() -> Dim {
        Dim::Named("batch".into())
    }

    #[test]
    fn a_graph_summary_lists_every_weight_with_its_dimensions_and_the_operators() {
        let model = backbone();
        let summary = GraphSummary::read(&model).unwrap();
        assert_eq!(
            summary.operators.iter().collect::<Vec<_>>(),
            ["Add", "MatMul", "Relu"]
        );
        assert_eq!(
            summary.initializers,
            [
                ("bb/w_1".to_owned(), vec![2, 2]),
                ("bb/one_2".to_owned(), vec![])
            ]
        );
        // Packed dims read the same as one varint per dim.
        let mut tensor = wire::Message::default();
        tensor.bytes(1, &[0x80, 0x04, 0x80, 0x03]).string(8, "pos");
        let mut graph = wire::Message::default();
        graph.message(5, &tensor);
        let mut packed = wire::Message::default();
        packed.message(7, &graph);
        assert_eq!(
            GraphSummary::read(&packed.0).unwrap().initializers,
            [("pos".to_owned(), vec![512, 384])]
        );
        assert!(GraphSummary::read(b"not a model").is_err());
    }

    /// A "backbone": y = Relu(x · W) with a dead branch z = x + 1 exposed as a second output.
    fn backbone() -> Vec<u8> {
        let mut g = Graph::new(17, "bb/");
        let w = g.constant("w", array![[1.0f32, 2.0], [3.0, 4.0]].view().into_dyn());
        let one = g.scalar("one", 1.0);
        let h = g.node("MatMul", &["x", &w], &[]);
        g.node_into("Relu", &[&h], &[], "y");
        g.node_into("Add", &["x", &one], &[], "z");
        standalone_model(
            &g,
            &[ValueInfo::new(
                "x",
                ElementType::Float,
                vec![batch(), Dim::Fixed(2)],
            )],
            &[
                ValueInfo::new("y", ElementType::Float, vec![batch(), Dim::Fixed(2)]),
                ValueInfo::new("z", ElementType::Float, vec![batch(), Dim::Fixed(2)]),
            ],
            &[],
        )
    }

    #[test]
    fn a_written_model_parses_back() {
        let bytes = backbone();
        let m = OnnxModel::parse(&bytes).unwrap();
        assert_eq!(m.ir_version(), IR_VERSION);
        assert_eq!(m.opset(), 17);
        assert_eq!(m.inputs().len(), 1);
        assert_eq!(
            m.inputs()[0].dims,
            Some(vec![batch(), Dim::Fixed(2)]),
            "shapes survive"
        );
        assert_eq!(m.outputs().len(), 2);
        assert_eq!(node_outputs(&m).len(), 3);
    }

    #[test]
    fn merging_replaces_outputs_prunes_dead_nodes_and_keeps_the_rest_verbatim() {
        // A backbone another tool produced: the merged model names graft, and keeps the original as metadata.
        let mut bytes = backbone();
        let at = bytes
            .windows(7)
            .position(|w| w == b"\x12\x05graft")
            .expect("producer_name");
        bytes[at + 2..at + 7].copy_from_slice(b"torch");
        let m = OnnxModel::parse(&bytes).unwrap();
        let mut pre = Graph::new(17, "pre/");
        let two = pre.scalar("two", 2.0);
        pre.node_into("Mul", &["raw", &two], &[], "x");
        let mut tail = Graph::new(17, "head/");
        let s = tail.reduce("ReduceSum", "y", &[1], false);
        tail.node_into("Neg", &[&s], &[], "score");
        let merged = m
            .merge(
                Some(&pre),
                &["x"],
                &tail,
                &[ValueInfo::new(
                    "raw",
                    ElementType::Float,
                    vec![batch(), Dim::Fixed(2)],
                )],
                &[ValueInfo::new("score", ElementType::Float, vec![batch()])],
                &[("k".into(), "v".into())],
            )
            .unwrap();
        let back = OnnxModel::parse(&merged).unwrap();
        assert_eq!(
            back.producer(),
            format!("graft {}", env!("CARGO_PKG_VERSION"))
        );
        let metadata = back.metadata();
        assert!(metadata.contains(&(
            "graft.backbone_producer".to_owned(),
            format!("torch {}", env!("CARGO_PKG_VERSION"))
        )));
        assert!(metadata.contains(&("k".to_owned(), "v".to_owned())));
        assert_eq!(
            back.inputs().iter().map(|i| &i.name).collect::<Vec<_>>(),
            ["raw"]
        );
        assert_eq!(
            back.outputs().iter().map(|i| &i.name).collect::<Vec<_>>(),
            ["score"]
        );
        let produced = node_outputs(&back);
        assert!(
            produced.contains_key("y") && !produced.contains_key("z"),
            "the dead branch is gone"
        );
        // Topological order: prelude, backbone, tail.
        assert!(produced["x"] < produced["y"] && produced["y"] < produced["score"]);
        assert_eq!(
            back.initializers.len(),
            3,
            "w, two, axes (the dead branch's `one` is pruned)"
        );
    }

    #[test]
    fn name_clashes_and_opset_mismatches_are_refused() {
        let bytes = backbone();
        let m = OnnxModel::parse(&bytes).unwrap();
        let mut tail = Graph::new(17, "bb/");
        tail.node_into("Neg", &["y"], &[], "z");
        let out = [ValueInfo::new("z", ElementType::Float, vec![])];
        let err = m.merge(None, &[], &tail, &[], &out, &[]).unwrap_err();
        assert!(err.to_string().contains("`z` is already used"), "{err}");
        let tail = Graph::new(13, "h/");
        let err = m.merge(None, &[], &tail, &[], &out, &[]).unwrap_err();
        assert!(err.to_string().contains("opset 13"), "{err}");
    }

    #[test]
    fn reduce_writes_axes_the_way_each_opset_wants() {
        let mut old = Graph::new(11, "");
        old.reduce("ReduceSum", "x", &[1], true);
        assert!(
            old.initializer_names.is_empty(),
            "opset 11: axes is an attribute"
        );
        let mut new = Graph::new(17, "");
        new.reduce("ReduceSum", "x", &[1], true);
        assert_eq!(
            new.initializer_names.len(),
            1,
            "opset 13+: axes is an input"
        );
        new.reduce("ReduceMean", "x", &[1], true);
        assert_eq!(
            new.initializer_names.len(),
            1,
            "ReduceMean takes axes as input only from 18"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(OnnxModel::parse(b"not a model at all").is_err());
        assert!(OnnxModel::parse(&[]).is_err());
        let bytes = backbone();
        assert!(OnnxModel::parse(&bytes[..bytes.len() / 2]).is_err());
    }
}
