//! Dense vectors stored back to back, addressed by an internal offset.

/// All vectors of a collection in one flat buffer; a point's vector lives
/// at its offset, which never changes while the point exists.
#[derive(Debug, Clone)]
pub struct VectorStore {
    dim: usize,
    data: Vec<f32>,
}

impl VectorStore {
    pub fn new(dim: usize) -> Self {
        assert!(dim > 0, "a vector store needs a dimension");
        VectorStore {
            dim,
            data: Vec::new(),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many offsets exist (including ones whose point was deleted).
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The vector at `offset`.
    pub fn get(&self, offset: u32) -> &[f32] {
        let start = offset as usize * self.dim;
        &self.data[start..start + self.dim]
    }

    /// Appends a vector; returns its offset.
    pub fn push(&mut self, v: &[f32]) -> u32 {
        assert_eq!(v.len(), self.dim, "vector of the wrong dimension");
        let offset = self.len() as u32;
        self.data.extend_from_slice(v);
        offset
    }

    /// Overwrites the vector at `offset`.
    pub fn set(&mut self, offset: u32, v: &[f32]) {
        assert_eq!(v.len(), self.dim, "vector of the wrong dimension");
        let start = offset as usize * self.dim;
        self.data[start..start + self.dim].copy_from_slice(v);
    }
}
