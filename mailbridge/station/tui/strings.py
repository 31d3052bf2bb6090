"""Every word officers read in ``mailbridge ledger`` and ``mailbridge report``.

Officers read Vietnamese. The words live here, in one module, so a gettext
catalog can replace them later without touching the screens. Category labels are
the form's own (``mailbridge/labels.py``: ``[[categories]] labels.vi``, else the
Vietnamese catalog), so officers read the very words the tipster chose.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...config import Category, Settings
from ...labels import category_label as _label

STATUS: Mapping[str, str] = {
    "new": "Mới",
    "verifying": "Đang xác minh",
    "of_value": "Có giá trị",
    "not_of_value": "Không có giá trị",
    "spam": "Tin rác",
    "handled": "Đã xử lý",
}
KIND: Mapping[str, str] = {
    "tip": "Tin báo",
    "followup": "Bổ sung của người báo tin",
    "reply": "Trả lời của cán bộ",
    "other": "Thư khác",
    "auto": "Thư tự động",
    "placeholder": "Thư quá lớn (chưa tải)",
    "forged": "Thư mạo danh hệ thống",
}
ACTION: Mapping[str, str] = {
    "status": "Trạng thái",
    "category": "Loại tin",
    "assign": "Phân công",
    "note": "Ghi chú",
    "signal": "Tín hiệu hộp thư",
    "flags": "Cờ thư",
    "moved": "Chuyển thư mục",
    "copied": "Sao chép thư",
    "deleted": "Xóa thư",
}

MAILBOX = "Hộp thư"  # the actor of changes applied from mailbox signals
INBOX = "Hộp thư đến"
UNREAD = "chưa đọc"
FLAGS: Mapping[str, str] = {
    "\\seen": "đã đọc",
    "\\answered": "đã trả lời",
    "\\flagged": "gắn cờ",
    "\\deleted": "đánh dấu xóa",
    "\\draft": "thư nháp",
    "$forwarded": "đã chuyển tiếp",
    "$junk": "thư rác",
    "junk": "thư rác",
    "$notjunk": "không phải thư rác",
    "notjunk": "không phải thư rác",
}
SIGNAL_WORDS: Mapping[str, str] = {"folder": "thư mục", "flag": "cờ"}

TITLE = "Sổ tin báo"
COL_REF = "Số"
COL_RECEIVED = "Nhận lúc"
COL_CATEGORY = "Loại tin"
COL_PLACEMENT = "Địa điểm"
COL_STATUS = "Trạng thái"
COL_ASSIGNEE = "Phụ trách"
COL_PREVIEW = "Nội dung"
COL_STATION = "Đồn"
COL_MONTH = "Tháng"

ALL = "Tất cả"
ANY_STATUS = "Mọi trạng thái"
ANY_CATEGORY = "Mọi loại tin"
ANY_STATION = "Mọi đồn"
ANY_PLACEMENT = "Mọi địa điểm"
ANY_ASSIGNEE = "Mọi cán bộ"
ASSIGNED_TO_ME = "Giao cho tôi"
OVERDUE = "⚠ "  # before the status of an open tip with no action for ledger.overdue_days
# Before the preview of a tip the relay marked: many tips carried the same text.
LIKELY_SPAM = "[nghi tin rác: nhiều bản giống nhau] "
LIKELY_SPAM_COUNT = "Nghi tin rác (nhiều bản giống nhau)"  # the report's count of them
LIKELY_SPAM_DETAIL = ("⚠ Nghi tin rác: máy chuyển tin đã nhận nhiều bản gần giống tin này "
                      "trong cùng thời gian; vẫn cần cán bộ xem xét")
FROM_DATE = "Từ dd/mm/yyyy"
TO_DATE = "Đến dd/mm/yyyy"
SEARCH = "Tìm trong nội dung…"
BAD_DATE = ("Không đọc được ngày {value!r}: nhập ngày/tháng/năm, ví dụ 01/12/2026 "
            "(chưa lọc theo ngày)")
COUNT = "{shown} tin"
FIGURES = ("{received} tin · có giá trị {of_value} ({percent}) · không có giá trị "
           "{not_of_value} · tin rác {spam} · đã xử lý {handled} · chưa xử lý xong {open}")
ANY_VERDICT = "Mọi đánh giá"
VERDICT_NONE = "Chưa đánh giá"
LOADING = "Đang tải…"
NEW_TIPS = "● {count} tin mới từ khi mở (in đậm; r: bỏ đánh dấu) · "
NOBODY = "(chưa phân công)"
NO_PLACEMENT = "(không rõ)"

KEY_QUIT = "Thoát"
KEY_OPEN = "Xem"
KEY_LIST = "Về danh sách"
KEY_SEARCH = "Tìm"
KEY_FILTER = "Lọc"
KEY_RESET = "Bỏ lọc"
KEY_REFRESH = "Tải lại"
KEY_STATUS = "Trạng thái"
KEY_CATEGORY = "Loại tin"
KEY_ASSIGN = "Phân công"
KEY_NOTE = "Ghi chú"
KEY_REPLY = "Trả lời người báo tin"
KEY_SAVE = "Lưu tệp"
KEY_OPEN_FILE = "Mở tệp"
KEY_BACK = "Quay lại"

THREAD = "Toàn bộ thư"
ATTACHMENTS = "Tệp đính kèm"
NO_ATTACHMENTS = "(không có tệp đính kèm)"
NOTES = "Ghi chú nội bộ"
HISTORY = "Lịch sử"
SIGNALS = "Tín hiệu hộp thư"
REASON = "Lý do"
RECEIVED_CATEGORY = "Loại tin người báo chọn"
TRUNCATED = "… (còn {more} ký tự, đã cắt bớt khi hiển thị)"

CHOOSE_STATUS = "Chuyển {ref} sang trạng thái:"
CHOOSE_CATEGORY = "Sửa loại tin của {ref}:"
CHOOSE_ASSIGNEE = "Phân công {ref} cho:"
WRITE_NOTE = "Ghi chú nội bộ cho {ref} (chỉ cán bộ xem; Ctrl+S để lưu):"
WRITE_REPLY = ("Trả lời người báo tin của {ref}. Người báo tin đọc được nội dung này bằng "
               "mã biên nhận; đừng ghi tên hay số điện thoại của cán bộ (Ctrl+S để gửi):")
REPLY_SENT = "Đã gửi trả lời cho người báo tin của {ref}; bản sao nằm trong thư mục {folder}"
REASON_NEEDED = "Cần ghi lý do cho lựa chọn này"
REASON_SHORT = "Lý do quá ngắn: ghi ít nhất {min} ký tự để người sau hiểu"
REASON_REQUIRED = "Lý do (bắt buộc)"
REASON_OPTIONAL = "Lý do (không bắt buộc)"
SAVE_TO = "Lưu {name} vào thư mục:"
OK = "Đồng ý"
CANCEL = "Hủy"
SAVED = "Đã lưu: {path}"
DONE = "Đã ghi: {what}"
NO_TIP = "Chưa chọn tin nào"
FORGED = ("Có {count} thư mạo danh hệ thống tin báo (không có chữ ký hợp lệ của máy chủ "
          "tin báo): chúng không phải tin báo và không có trong danh sách. Thư vẫn nằm "
          "trong hộp thư của đồn.")
NO_FILE = "Không tìm thấy tệp {path}: kiểm tra ledger.attachments_dir"
NOT_KEPT = ("Tệp {name} không được lưu trong sổ (sổ chỉ lưu tệp của tin báo): "
            "mở thư trong hộp thư của đồn để lấy tệp")
OPENING = "Đang mở {name} bằng chương trình của máy…"
NO_OPENER = "Không có chương trình mở tệp (xdg-open): hãy lưu tệp rồi mở"
NO_STATUS_MOVE = "{ref}: không thể đổi trạng thái từ {status}"
NONE = "không"
REFUSED: Mapping[str, str] = {
    "gone": "Tin này không còn trong sổ: bấm r để tải lại danh sách",
    "no_officer": ("Tài khoản máy này chưa có tên cán bộ: nhờ quản trị thêm vào "
                   "stations.<đồn>.officers"),
    "unknown_status": "Không có trạng thái {status!r}",
    "transition": "{ref}: không thể chuyển từ {old} sang {new} (chỉ được chuyển sang: {allowed})",
    "needs_reason": "Chuyển {ref} sang {new} cần ghi lý do",
    "short_reason": "Lý do {reason!r} quá ngắn: ghi ít nhất {min} ký tự để người sau hiểu",
    "unknown_category": "Không có loại tin {category!r}: nhờ quản trị thêm vào [[categories]]",
    "same_category": "{ref} đã thuộc loại tin {category}",
    "not_officer": ("{assignee} không phải cán bộ của {station}: nhờ quản trị thêm vào "
                    "stations.{station_id}.officers"),
    "same_assignee": "{ref} đã được phân công cho {assignee}",
    "empty_note": "Ghi chú trống: hãy nhập nội dung",
    # The ledger itself (LedgerError): what to do, then the database's own words.
    "db_locked": ("Sổ tin đang bị chương trình khác khóa (ledger.database): thử lại sau "
                  "giây lát, hoặc dừng chương trình đang giữ nó. Chi tiết: {why}"),
    "db_schema": ("Sổ tin (ledger.database) chưa có hoặc đã cũ: nhờ quản trị chạy "
                  "`mailbridge db upgrade --role station`. Chi tiết: {why}"),
    "db_failed": ("Lỗi cơ sở dữ liệu của sổ tin: nhờ quản trị kiểm tra ledger.database "
                  "(máy chủ, dung lượng đĩa, quyền truy cập). Chi tiết: {why}"),
    "file_missing": ("Không thấy tệp đính kèm {path}: nhờ quản trị kiểm tra "
                     "ledger.attachments_dir"),
    "not_a_folder": "{path} không phải là thư mục: hãy chọn một thư mục có sẵn",
    "cannot_save": "Không lưu được vào {path} ({why}): hãy chọn thư mục ghi được",
}

# Report (``mailbridge report``)
REPORT_TITLE = "Thống kê tin báo"
PERIOD = "Thời gian: {start} – {end}"
PERIOD_ALL = "toàn bộ"
TOTAL = "Tổng cộng"
RECEIVED = "Tiếp nhận"
OF_VALUE = "Có giá trị"
NOT_OF_VALUE = "Không có giá trị"
SPAM = "Tin rác"
OPEN = "Chưa xử lý xong"
MEDIAN = "Trung vị giờ đến xử lý đầu"
BY = {
    "station": "Theo đồn",
    "category": "Theo loại tin",
    "placement": "Theo địa điểm",
    "month": "Theo tháng",
    "station_month": "Theo đồn và tháng",
}
HANDLED = "Đã xử lý"
OF_VALUE_PERCENT = "% có giá trị"
CSV_BY = "Phân theo"  # CSV headers: Vietnamese for Excel (JSON keeps the machine ids)
CSV_KEY = "Mã"
CSV_LABEL = "Tên"
BRIEFING_TITLE = "Báo cáo tin báo: {station}"
BRIEFING_TOTALS = ("Tiếp nhận {received} tin, {of_value} tin có giá trị ({percent}), "
                   "{handled} tin đã xử lý, {open} tin chưa xử lý xong")
TREND = "Tin tiếp nhận theo tháng"
MADE_AT = "Lập lúc {at} (giờ của đồn)"

# Case file (``mailbridge ledger export``)
CASE_TITLE = "Hồ sơ tin báo {ref}"
CASE_CLOCK = "Mọi giờ ghi trong hồ sơ là giờ của đồn ({zone}, UTC{offset})"
CASE_SHA256 = "SHA-256: {digest}"
CASE_WRITTEN = "Đã ghi hồ sơ {ref} vào {path}"
CASE_PAGE = "Hồ sơ tin báo {ref}, trang {page}/{pages}"


def status_label(status: str) -> str:
    return STATUS.get(status, status)


def actor_label(actor: str) -> str:
    return MAILBOX if actor == "mailbox" else actor


def reason_label(reason: str) -> str:
    """Signal reasons are stored as "folder X" / "flag X"; officers read them in Vietnamese."""
    word, _, rest = reason.partition(" ")
    return f"{SIGNAL_WORDS[word]} {rest}" if word in SIGNAL_WORDS and rest else reason


def category_label(settings: Settings | None, category_id: str) -> str:
    """The Vietnamese label the form shows; a category no longer configured keeps its
    built-in label, or its id."""
    category = settings.category(category_id) if settings is not None else None
    return _label(category or Category(category_id, category_id), "vi")


# A feedback box's name carries its purpose, so soldiers' opinions are never read as
# villagers' tips; a tip box's name stands alone, as it always did.
PURPOSE_MARK = {"feedback": "góp ý"}


def station_label(settings: Settings | None, station_id: str) -> str:
    """The station's name, with "(góp ý)" for a feedback box; its id if not configured."""
    station = settings.station(station_id) if settings is not None else None
    if station is None:
        return station_id
    mark = PURPOSE_MARK.get(station.purpose)
    return f"{station.name} ({mark})" if mark else station.name


def placement_label(settings: Settings | None, station_id: str, placement_id: str) -> str:
    if not placement_id:
        return NO_PLACEMENT
    station = settings.station(station_id) if settings is not None else None
    placement = station.placement(placement_id) if station is not None else None
    return placement.label if placement is not None else placement_id


def refusal(settings: Settings | None, kind: str, params: Mapping[str, str]) -> str | None:
    """A workflow refusal in officers' words (statuses, categories and stations by their
    labels), or None for a kind without words here."""
    template = REFUSED.get(kind)
    if template is None:
        return None
    words = dict(params)
    for key in ("old", "new"):
        if key in words:
            words[key] = status_label(words[key])
    if "allowed" in words:
        words["allowed"] = ", ".join(status_label(v) for v in words["allowed"].split(",")
                                     if v) or NONE
    if "category" in words:
        words["category"] = category_label(settings, words["category"])
    if "assignee" in words:
        words["assignee"] = words["assignee"] or NOBODY
    if "station" in words:
        station = settings.station(words["station"]) if settings is not None else None
        words["station_id"] = words["station"]
        words["station"] = station.name if station is not None else words["station"]
    return template.format(**words)


def folder_label(folder: str) -> str:
    return INBOX if folder.upper() == "INBOX" else folder


def flags_label(flags: str) -> str:
    """IMAP flags in officers' words: "\\Seen \\Flagged" is "đã đọc, gắn cờ"; a message
    without \\Seen is unread; a flag of the station's own is shown as it is."""
    names = flags.split()
    words = [FLAGS.get(f.lower(), f) for f in names if f.lower() != "\\recent"]
    if "\\seen" not in (f.lower() for f in names):
        words.insert(0, UNREAD)
    return ", ".join(words)


def short_names(names: Mapping[str, str]) -> dict[str, str]:
    """Station names without the words they all begin with ("Đồn Biên phòng Nậm Cuổi"
    and "Đồn Biên phòng Mù Cả" are "Nậm Cuổi" and "Mù Cả"), so a narrow box tells them
    apart; a name that would be left empty stays whole."""
    split = {key: name.split() for key, name in names.items()}
    common = 0
    if len(split) > 1:
        first = next(iter(split.values()))
        while all(len(w) > common + 1 and w[common] == first[common] for w in split.values()):
            common += 1
    return {key: " ".join(words[common:]) for key, words in split.items()}
