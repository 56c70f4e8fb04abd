use super::{hot_ranges, CalibrationError, HOT_PAGE_LIMIT, MAX_OUTPUT};

fn listing(lines: &str) -> Vec<u8> {
    format!("<<RESULT>>{{}}<<RESULT>>\n\nhako hot pages\n{lines}calibrated\n").into_bytes()
}

#[test]
fn a_listing_gives_its_ranges_in_order() {
    let output = listing("hot 1000 2000\nhot 5000 1000\nhot 7f0000000000 3000\n");
    assert_eq!(
        hot_ranges(&output),
        Ok(vec![
            (0x1000, 0x2000),
            (0x5000, 0x1000),
            (0x7f00_0000_0000, 0x3000)
        ])
    );
}

#[test]
fn an_empty_listing_gives_no_range() {
    assert_eq!(hot_ranges(&listing("")), Ok(vec![]));
}

#[test]
fn only_the_last_listing_counts() {
    // The operator's warm-up prints before the listing; a "hot" line of its own is not one.
    let mut output = b"\nhako hot pages\nhot 1000 1000\n".to_vec();
    output.extend_from_slice(&listing("hot 9000 1000\n"));
    assert_eq!(hot_ranges(&output), Ok(vec![(0x9000, 0x1000)]));
}

#[test]
fn output_without_a_listing_is_refused() {
    assert_eq!(
        hot_ranges(b"hot 1000 1000\ncalibrated\n"),
        Err(CalibrationError::NoListing)
    );
    assert_eq!(
        hot_ranges(b"\nhako hot pages\nhot 1000 1000\n"),
        Err(CalibrationError::NoListing)
    );
}

#[test]
fn a_malformed_line_refuses_the_listing() {
    for (lines, line) in [
        ("hot 1000\n", 1),
        ("hot 1000 1000 1000\n", 1),
        ("hot 0x1000 1000\n", 1),
        ("hot -1000 1000\n", 1),
        ("hot +1000 +1000\n", 1),
        ("hot 1000 \n", 1),
        ("hot 1000 1000\ncold 2000 1000\n", 2),
        ("hot 1000 1000\n\n", 2),
        ("hot 1000  1000\n", 1),
        ("hot 10000000000000000 1000\n", 1),
        ("hot 1000 1000", 1),
        ("hot \u{e9} 1000\n", 1),
    ] {
        assert_eq!(
            hot_ranges(&listing(lines)),
            Err(CalibrationError::Malformed { line }),
            "{lines:?}"
        );
    }
    let mut invalid_utf8 = listing("");
    invalid_utf8.splice(
        invalid_utf8.len() - 11..invalid_utf8.len() - 11,
        *b"hot \xff 1\n",
    );
    assert_eq!(
        hot_ranges(&invalid_utf8),
        Err(CalibrationError::Malformed { line: 1 })
    );
}

#[test]
fn a_range_that_is_not_pages_of_user_space_refuses_the_listing() {
    for lines in [
        "hot 1001 1000\n",
        "hot 1000 fff\n",
        "hot 1000 0\n",
        "hot ffffffffffff0000 20000\n",
        "hot 100000000000000 1000\n",
        "hot fffffffffffff000 1000\n",
    ] {
        assert_eq!(
            hot_ranges(&listing(lines)),
            Err(CalibrationError::NotPages { line: 1 }),
            "{lines:?}"
        );
    }
}

#[test]
fn ranges_out_of_order_or_overlapping_refuse_the_listing() {
    for lines in [
        "hot 5000 1000\nhot 1000 1000\n",
        "hot 1000 3000\nhot 2000 1000\n",
        "hot 1000 1000\nhot 1000 1000\n",
    ] {
        assert_eq!(
            hot_ranges(&listing(lines)),
            Err(CalibrationError::Unordered { line: 2 }),
            "{lines:?}"
        );
    }
    // Adjacent is fine.
    assert_eq!(
        hot_ranges(&listing("hot 1000 1000\nhot 2000 1000\n")),
        Ok(vec![(0x1000, 0x1000), (0x2000, 0x1000)])
    );
}

#[test]
fn the_listing_is_cut_after_the_page_limit() {
    let page = 4096u64;
    let first = (HOT_PAGE_LIMIT - 2) * page;
    let lines = format!(
        "hot 1000 {first:x}\nhot {:x} 4000\nhot 7f0000000000 1000\n",
        0x1000 + first
    );
    let ranges = hot_ranges(&listing(&lines)).unwrap();
    assert_eq!(ranges, vec![(0x1000, first), (0x1000 + first, 2 * page)]);
    assert_eq!(
        ranges.iter().map(|(_, len)| len / page).sum::<u64>(),
        HOT_PAGE_LIMIT
    );
}

#[test]
fn the_output_bound_fits_a_full_listing() {
    // Every range one page apart: the longest listing the limit allows.
    let line = format!("hot {:x} 1000\n", 0x7fff_ffff_0000u64);
    assert!(line.len() as u64 * HOT_PAGE_LIMIT + 4096 < MAX_OUTPUT as u64);
}
