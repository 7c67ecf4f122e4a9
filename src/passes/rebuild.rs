//! The graph copier every pass is built on: a pass walks the old graph in topological order
//! and decides, node by node, what the new graph gets. The copier keeps the tables (name,
//! inputs, params, scopes), gives every new node the span and scope of the old node it came
//! from, and remaps outputs and updates at the end.
//!
//! **Invariant:** new nodes are appended in the order they are created and only ever refer
//! to nodes already in the new graph, so the new graph is in topological order too.

use crate::ir::{Graph, Node, NodeId, Op, TensorType};

pub(crate) struct Rebuild<'a> {
    pub old: &'a Graph,
    pub new: Graph,
    /// `map[old id]`: the new node that now holds the old node's value.
    map: Vec<Option<NodeId>>,
}

impl<'a> Rebuild<'a> {
    pub fn new(old: &'a Graph) -> Rebuild<'a> {
        let new = Graph {
            name: old.name.clone(),
            inputs: old.inputs.clone(),
            params: old.params.clone(),
            scopes: old.scopes.clone(),
            ..Graph::default()
        };
        Rebuild { old, new, map: vec![None; old.len()] }
    }

    /// The new node holding the value of old node `id`. Passes visit nodes in order, so an
    /// argument of the node being visited has always been mapped, unless the pass dropped it
    /// (only DCE drops nodes, and only nodes nothing live uses).
    pub fn mapped(&self, id: NodeId) -> NodeId {
        match self.map[id.index()] {
            Some(n) => n,
            None => panic!("internal error: pass used dropped node {id} of `{}`", self.old.name),
        }
    }

    /// The old node's arguments, mapped into the new graph.
    pub fn mapped_args(&self, id: NodeId) -> Vec<NodeId> {
        self.old.node(id).args.iter().map(|&a| self.mapped(a)).collect()
    }

    /// Records that old node `old` is now computed by new node `new`.
    pub fn set(&mut self, old: NodeId, new: NodeId) {
        self.map[old.index()] = Some(new);
    }

    /// A node of the new graph.
    pub fn node(&self, id: NodeId) -> &Node {
        self.new.node(id)
    }

    /// Appends `op(args)` of type `ty` to the new graph with the span and scope of old node
    /// `origin`. A type error here is a bug in the pass that built the node.
    pub fn add(&mut self, origin: NodeId, op: Op, args: &[NodeId], ty: TensorType) -> NodeId {
        self.new.current_span = self.old.span(origin);
        self.new.current_scope = self.old.node_scopes[origin.index()];
        self.new.add(op, args, Some(ty))
    }

    /// Copies old node `id` unchanged (arguments mapped) and maps it to the copy.
    pub fn copy(&mut self, id: NodeId) -> NodeId {
        let args = self.mapped_args(id);
        let op = self.old.node(id).op.clone();
        let ty = self.old.ty(id).clone();
        let new = self.add(id, op, &args, ty);
        self.set(id, new);
        new
    }

    /// The finished graph with outputs and updates pointing at the new nodes.
    pub fn finish(mut self) -> Graph {
        let outputs = self
            .old
            .outputs
            .iter()
            .map(|o| crate::ir::OutputInfo { name: o.name.clone(), node: self.mapped(o.node) })
            .collect();
        let updates = self.old.updates.iter().map(|&(p, n)| (p, self.mapped(n))).collect();
        self.new.outputs = outputs;
        self.new.updates = updates;
        self.new.current_span = None;
        self.new.current_scope = self.old.current_scope;
        self.new
    }
}
