//! RBD image extents ↔ RADOS object extents (pure arithmetic, no I/O).
//!
//! Verified against src/osdc/Striper.cc (`Striper::file_to_extents`,
//! `Striper::extent_to_file`, `Striper::get_num_objects`):
//!
//! ```text
//! blockno     = off / stripe_unit                  // which stripe unit of the image
//! stripeno    = blockno / stripe_count             // horizontal stripe (row)
//! stripepos   = blockno % stripe_count             // object within the object set
//! objectsetno = stripeno / stripes_per_object      // stripes_per_object = object_size / stripe_unit
//! objectno    = objectsetno * stripe_count + stripepos
//! x_offset    = (stripeno % stripes_per_object) * stripe_unit + off % stripe_unit
//! ```
//!
//! Ceph merges a piece into the object's previous extent when the object
//! offsets are adjacent and records one buffer extent per piece. Here an
//! [`ObjectExtent`] carries a single `buffer_offset`, so a piece is merged
//! only into the *immediately preceding* extent (same object, adjacent object
//! offset — the buffer is then adjacent too). With `stripe_count == 1` this
//! gives exactly Ceph's result (one extent per object); with `stripe_count >
//! 1` an object touched by several stripe rows yields one extent per row
//! where Ceph yields one extent with several buffer extents.
//!
//! Defaults: librbd uses `stripe_unit = object_size, stripe_count = 1` when
//! either value is 0 (the image has no STRIPINGV2 values); [`Layout::new`]
//! does the same (verified against src/librbd/ImageCtx.cc `init_layout`).

/// Why a layout is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// `1 << order` must fit Ceph's `u32` `file_layout_t::object_size`.
    #[error("object order {0} is out of range (at most 31)")]
    InvalidOrder(u8),
    /// The stripe unit must be non-zero and divide the object size.
    #[error("stripe unit {stripe_unit} does not divide object size {object_size}")]
    InvalidStripeUnit {
        /// The stripe unit given.
        stripe_unit: u64,
        /// `1 << order`.
        object_size: u64,
    },
    /// The stripe count must fit Ceph's `u32` `file_layout_t::stripe_count`.
    #[error("stripe count {0} is out of range")]
    InvalidStripeCount(u64),
}

/// A validated striping layout (`file_layout_t` as librbd builds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Bytes per RADOS object (`1 << order`).
    pub object_size: u64,
    /// Bytes per stripe unit; divides `object_size`.
    pub stripe_unit: u64,
    /// Objects per object set (≥ 1).
    pub stripe_count: u64,
}

impl Layout {
    /// Builds a layout from an image's order and STRIPINGV2 values; a zero
    /// `stripe_unit` or `stripe_count` selects the default layout
    /// (`stripe_unit = object_size`, `stripe_count = 1`).
    pub fn new(order: u8, stripe_unit: u64, stripe_count: u64) -> Result<Layout, LayoutError> {
        if order > 31 {
            return Err(LayoutError::InvalidOrder(order));
        }
        let object_size = 1u64 << order;
        if stripe_unit == 0 || stripe_count == 0 {
            return Ok(Layout { object_size, stripe_unit: object_size, stripe_count: 1 });
        }
        if stripe_unit > object_size || !object_size.is_multiple_of(stripe_unit) {
            return Err(LayoutError::InvalidStripeUnit { stripe_unit, object_size });
        }
        if stripe_count > u64::from(u32::MAX) {
            return Err(LayoutError::InvalidStripeCount(stripe_count));
        }
        Ok(Layout { object_size, stripe_unit, stripe_count })
    }

    /// Stripe units per object.
    fn stripes_per_object(&self) -> u64 {
        // A validated layout has stripe_unit in 1..=object_size.
        (self.object_size / self.stripe_unit.max(1)).max(1)
    }

    /// Number of RADOS objects backing an image of `image_size` bytes, as
    /// `Striper::get_num_objects` computes it.
    pub fn object_count(&self, image_size: u64) -> u64 {
        let sc = self.stripe_count.max(1);
        let su = self.stripe_unit.max(1);
        // object_size <= 2^31 and stripe_count <= 2^32 - 1: no overflow.
        let period = sc.saturating_mul(self.object_size).max(1);
        let num_periods = image_size.div_ceil(period);
        let remainder_bytes = image_size % period;
        let mut remainder_objs = 0;
        if remainder_bytes > 0 && remainder_bytes < sc.saturating_mul(su) {
            remainder_objs = sc - remainder_bytes.div_ceil(su);
        }
        num_periods.saturating_mul(sc).saturating_sub(remainder_objs)
    }
}

/// One contiguous piece of an image extent inside one RADOS object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectExtent {
    /// Object number (`rbd_data.<id>.<object_no %016x>`).
    pub object_no: u64,
    /// Byte offset inside the object.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Offset of this piece relative to the start of the image extent.
    pub buffer_offset: u64,
}

/// Maps the image extent `[offset, offset + length)` to object extents, in
/// image order. The extent is clamped to end at `u64::MAX`. Zero length
/// gives no extents.
pub fn image_to_object_extents(layout: &Layout, offset: u64, length: u64) -> Vec<ObjectExtent> {
    let su = layout.stripe_unit.max(1);
    let sc = layout.stripe_count.max(1);
    let spo = layout.stripes_per_object();
    let length = length.min(u64::MAX - offset);
    let mut out: Vec<ObjectExtent> = Vec::new();
    let mut cur = offset;
    let mut left = length;
    while left > 0 {
        let blockno = cur / su;
        let stripeno = blockno / sc;
        let stripepos = blockno % sc;
        let objectsetno = stripeno / spo;
        let object_no = objectsetno * sc + stripepos;
        let block_start = (stripeno % spo) * su;
        let block_off = cur % su;
        let x_offset = block_start + block_off;
        // With one object per set, consecutive stripe units of an object
        // are adjacent in the image: take everything up to the object end
        // at once (same result as Ceph's per-unit loop plus merging).
        let max = if sc == 1 { spo * su - x_offset } else { su - block_off };
        let x_len = left.min(max);
        let buffer_offset = cur - offset;
        match out.last_mut() {
            Some(prev) if prev.object_no == object_no && prev.offset + prev.length == x_offset => {
                prev.length += x_len;
            }
            _ => out.push(ObjectExtent { object_no, offset: x_offset, length: x_len, buffer_offset }),
        }
        left -= x_len;
        cur += x_len;
    }
    out
}

/// Maps `[offset, offset + length)` of object `object_no` back to image
/// extents `(image_offset, length)`, in object order, merging adjacent
/// pieces (`Striper::extent_to_file`). The range is clamped to the object
/// size; pieces whose image offset would overflow `u64` are dropped.
pub fn object_to_image_extents(layout: &Layout, object_no: u64, offset: u64, length: u64) -> Vec<(u64, u64)> {
    let su = layout.stripe_unit.max(1);
    let sc = layout.stripe_count.max(1);
    let spo = layout.stripes_per_object();
    let mut out: Vec<(u64, u64)> = Vec::new();
    if offset >= layout.object_size {
        return out;
    }
    let mut len = length.min(layout.object_size - offset);
    let mut off = offset;
    let stripepos = object_no % sc;
    let objectsetno = object_no / sc;
    while len > 0 {
        let off_in_block = off % su;
        let extent_len = len.min(su - off_in_block);
        let image_off = objectsetno
            .checked_mul(spo)
            .and_then(|x| x.checked_add(off / su))
            .and_then(|stripeno| stripeno.checked_mul(sc))
            .and_then(|x| x.checked_add(stripepos))
            .and_then(|blockno| blockno.checked_mul(su))
            .and_then(|x| x.checked_add(off_in_block))
            .filter(|x| x.checked_add(extent_len).is_some());
        let Some(image_off) = image_off else { break };
        match out.last_mut() {
            Some(prev) if prev.0 + prev.1 == image_off => prev.1 += extent_len,
            _ => out.push((image_off, extent_len)),
        }
        off += extent_len;
        len -= extent_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ex(object_no: u64, offset: u64, length: u64, buffer_offset: u64) -> ObjectExtent {
        ObjectExtent { object_no, offset, length, buffer_offset }
    }

    #[test]
    fn layout_validation() {
        let l = Layout::new(22, 0, 0).unwrap();
        assert_eq!(l, Layout { object_size: 4 << 20, stripe_unit: 4 << 20, stripe_count: 1 });
        // either zero selects the default
        assert_eq!(Layout::new(22, 65536, 0).unwrap(), l);
        assert_eq!(Layout::new(22, 0, 4).unwrap(), l);
        assert_eq!(Layout::new(32, 0, 0), Err(LayoutError::InvalidOrder(32)));
        assert!(matches!(Layout::new(20, 3000, 2), Err(LayoutError::InvalidStripeUnit { .. })));
        assert!(matches!(Layout::new(20, 2 << 20, 2), Err(LayoutError::InvalidStripeUnit { .. })));
        assert_eq!(Layout::new(20, 4096, 1 << 33), Err(LayoutError::InvalidStripeCount(1 << 33)));
        assert!(Layout::new(20, 65536, 4).is_ok());
    }

    #[test]
    fn default_layout_extents() {
        let l = Layout::new(22, 0, 0).unwrap();
        let os = 4u64 << 20;
        assert_eq!(image_to_object_extents(&l, 0, 4096), vec![ex(0, 0, 4096, 0)]);
        assert_eq!(image_to_object_extents(&l, 0, 0), vec![]);
        // crosses one object boundary
        assert_eq!(
            image_to_object_extents(&l, os - 512, 1024),
            vec![ex(0, os - 512, 512, 0), ex(1, 0, 512, 512)]
        );
        // spans three objects
        assert_eq!(
            image_to_object_extents(&l, os + 10, 2 * os),
            vec![ex(1, 10, os - 10, 0), ex(2, 0, os, os - 10), ex(3, 0, 10, 2 * os - 10)]
        );
        assert_eq!(object_to_image_extents(&l, 3, 0, 10), vec![(3 * os, 10)]);
        assert_eq!(l.object_count(0), 0);
        assert_eq!(l.object_count(1), 1);
        assert_eq!(l.object_count(os), 1);
        assert_eq!(l.object_count(os + 1), 2);
        assert_eq!(l.object_count(1 << 30), 256);
    }

    #[test]
    fn striped_layout_hand_computed() {
        // object 1 MiB, stripe unit 64 KiB, stripe count 4:
        // stripes_per_object = 16, object set = 4 objects = 4 MiB of image.
        let l = Layout::new(20, 64 << 10, 4).unwrap();
        let su = 64u64 << 10;
        // image [0, 256K) = units 0..4 -> objects 0..4 at object offset 0
        assert_eq!(
            image_to_object_extents(&l, 0, 4 * su),
            vec![ex(0, 0, su, 0), ex(1, 0, su, su), ex(2, 0, su, 2 * su), ex(3, 0, su, 3 * su)]
        );
        // image offset 5*su + 100, length su: unit 5 = row 1, pos 1 -> object 1 at su+100,
        // then unit 6 = row 1, pos 2 -> object 2 at su
        assert_eq!(
            image_to_object_extents(&l, 5 * su + 100, su),
            vec![ex(1, su + 100, su - 100, 0), ex(2, su, 100, su - 100)]
        );
        // image offset 4 MiB = unit 64 = row 16 -> object set 1, object 4 offset 0
        assert_eq!(image_to_object_extents(&l, 4 << 20, 10), vec![ex(4, 0, 10, 0)]);
        // last unit of object set 0: unit 63 = row 15, pos 3 -> object 3 at 15*su
        assert_eq!(image_to_object_extents(&l, 63 * su, su), vec![ex(3, 15 * su, su, 0)]);
        // object 1 bytes [0, 2su) are image units 1 and 5
        assert_eq!(object_to_image_extents(&l, 1, 0, 2 * su), vec![(su, su), (5 * su, su)]);
        // object 6 (set 1, pos 2), offset su+7: row 16+1=17, unit 17*4+2=70
        assert_eq!(object_to_image_extents(&l, 6, su + 7, 3), vec![(70 * su + 7, 3)]);
        // object counts: 4 MiB period of 4 objects
        assert_eq!(l.object_count(4 << 20), 4);
        assert_eq!(l.object_count(su), 1);
        assert_eq!(l.object_count(3 * su), 3);
        assert_eq!(l.object_count(5 * su), 4);
        assert_eq!(l.object_count((4 << 20) + 1), 5);
    }

    #[test]
    fn extremes_do_not_panic() {
        for l in [Layout::new(12, 0, 0).unwrap(), Layout::new(20, 4096, 3).unwrap()] {
            let e = image_to_object_extents(&l, u64::MAX - 5000, u64::MAX);
            assert_eq!(e.iter().map(|x| x.length).sum::<u64>(), 5000);
            assert!(image_to_object_extents(&l, u64::MAX, 10).is_empty());
            let _ = object_to_image_extents(&l, u64::MAX, 0, u64::MAX);
            assert!(object_to_image_extents(&l, 0, u64::MAX, 10).is_empty());
            let _ = l.object_count(u64::MAX);
        }
        let l = Layout::new(31, 512, u64::from(u32::MAX)).unwrap();
        let _ = l.object_count(u64::MAX);
        let _ = image_to_object_extents(&l, u64::MAX - 4096, 4096);
    }

    fn layouts() -> impl Strategy<Value = Layout> {
        (12u8..=23, 0u32..=11, 1u64..=8).prop_map(|(order, su_shift, sc)| {
            let su = 1u64 << (order - (su_shift as u8).min(order - 9));
            Layout::new(order, su, sc).unwrap()
        })
    }

    proptest! {
        #[test]
        fn extents_tile_the_range(l in layouts(), offset in 0u64..(1 << 34), length in 0u64..(1 << 22)) {
            let e = image_to_object_extents(&l, offset, length);
            let mut expect_buf = 0;
            for x in &e {
                prop_assert!(x.length > 0);
                prop_assert_eq!(x.buffer_offset, expect_buf);
                prop_assert!(x.offset + x.length <= l.object_size);
                expect_buf += x.length;
                // inverse: the piece maps back to exactly its image range
                let back = object_to_image_extents(&l, x.object_no, x.offset, x.length);
                prop_assert_eq!(back, vec![(offset + x.buffer_offset, x.length)]);
            }
            prop_assert_eq!(expect_buf, length);
        }

        #[test]
        fn object_range_round_trips(l in layouts(), object_no in 0u64..10_000, off in 0u64..(1 << 23), len in 0u64..(1 << 23)) {
            let off = off % l.object_size;
            for (img_off, img_len) in object_to_image_extents(&l, object_no, off, len) {
                for x in image_to_object_extents(&l, img_off, img_len) {
                    prop_assert_eq!(x.object_no, object_no);
                    prop_assert!(x.offset >= off);
                }
            }
        }

        #[test]
        fn object_count_covers_last_byte(l in layouts(), size in 1u64..(1 << 36)) {
            let last = image_to_object_extents(&l, size - 1, 1);
            let max_obj = last[0].object_no;
            prop_assert!(max_obj < l.object_count(size));
            // every object below the count holds at least one image byte
            let n = l.object_count(size);
            let first = object_to_image_extents(&l, n - 1, 0, 1);
            prop_assert!(first[0].0 < size);
        }

        #[test]
        fn no_panic_anywhere(order in 0u8..=40, su in any::<u64>(), sc in any::<u64>(), off in any::<u64>(), len in 0u64..(1 << 16), obj in any::<u64>()) {
            if let Ok(l) = Layout::new(order, su, sc) {
                let _ = image_to_object_extents(&l, off, len);
                let _ = object_to_image_extents(&l, obj, off, len);
                let _ = l.object_count(off);
            }
        }
    }
}
