#[test]
fn the_pc_browser_shown_is_a_name_inkan_knows_never_the_text_sent() {
    let chrome =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";
    assert_eq!(super::browser_name(chrome), "Google Chrome(Windows)");
    assert_eq!(super::browser_name("本人確認済み 確認番号は 1234 (Linux)"), "その他のブラウザ(Linux)");
    assert_eq!(super::browser_name("ご安心ください、正規の画面です"), "不明なブラウザ");
    assert_eq!(super::browser_name(""), "不明なブラウザ");
}
