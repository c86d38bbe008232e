//! Plain aligned columns, as kubectl prints them.

/// Renders `rows` under `headers`, each column as wide as its widest cell, three spaces apart.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let out = render(
            &["NAME", "PHASE"],
            &[
                vec!["web".into(), "Healthy".into()],
                vec!["payments".into(), "Degraded".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME       PHASE\nweb        Healthy\npayments   Degraded\n"
        );
    }
}
