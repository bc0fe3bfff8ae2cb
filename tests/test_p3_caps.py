"""T0's per-dataset caps on the real published P3 train sizes of the paper's 193 tasks (no data needed).

TRAIN_ROWS: the train rows of each P3 task as published in bigscience/P3 (the T0 task split sizes listed in
google-research/FLAN flan/v2/constants_t0.py, T0_TRAIN_TASK_SPLITS; a task holds one row per original example, a few
templates drop examples they do not apply to, e.g. duorc's and wiki_qa's).
"""
import pytest

from hyperrestart.core.errors import HyperrestartError
from hyperrestart.p3.split import check_split_sizes, split_sizes
from hyperrestart.p3.tasks import P3_TEMPLATES, dataset_of, paper_tasks, per_task_caps

TRAIN_ROWS = {
    "quartz_answer_question_below": 2696, "amazon_polarity_user_satisfied": 3600000,
    "dbpedia_14_given_a_list_of_category_what_does_the_title_belong_to": 560000,
    "wiki_qa_Topic_Prediction_Question_Only": 1040, "wiki_bio_guess_person": 582639,
    "race_middle_Select_the_best_answer_generate_span_": 25421, "race_middle_Select_the_best_answer_no_instructions_":
    25421, "wiqa_effect_with_string_answer": 29808, "adversarial_qa_dbidaf_question_context_answer": 10000,
    "quoref_Find_Answer": 19399, "adversarial_qa_droberta_answer_the_following_q": 10000,
    "amazon_polarity_convey_negative_or_positive_sentiment": 3600000, "race_high_Is_this_the_right_answer": 62445,
    "duorc_SelfRC_answer_question": 60721, "adversarial_qa_dbidaf_generate_question": 10000, "quarel_do_not_use": 1941,
    "quartz_given_the_fact_answer_the_q": 2696, "kilt_tasks_hotpotqa_formulate": 88869,
    "social_i_qa_Check_if_a_random_answer_is_valid_or_not": 33410, "quail_no_prompt_id": 10246,
    "race_high_Write_a_multi_choice_question_for_the_following_article": 62445, "quail_no_prompt_text": 10246,
    "adversarial_qa_droberta_based_on": 10000, "cos_e_v1.11_question_option_description_text": 9741,
    "quarel_heres_a_story": 1941, "wiki_qa_Jeopardy_style": 1040, "quail_context_description_question_answer_text":
    10246, "web_questions_get_the_answer": 3778, "wiki_qa_Is_This_True_": 20360, "social_i_qa_Generate_answer": 33410,
    "cos_e_v1.11_question_description_option_id": 9741, "app_reviews_categorize_rating_using_review": 288065,
    "wiqa_what_is_the_missing_first_step": 29808, "duorc_ParaphraseRC_answer_question": 69524,
    "adversarial_qa_dbert_generate_question": 10000, "wiki_hop_original_generate_subject": 43738,
    "adversarial_qa_droberta_generate_question": 10000, "wiki_qa_automatic_system": 20360,
    "cos_e_v1.11_description_question_option_id": 9741, "web_questions_short_general_knowledge_q": 3778,
    "cos_e_v1.11_description_question_option_text": 9741, "duorc_SelfRC_build_story_around_qa": 60094,
    "app_reviews_convert_to_star_rating": 288065, "adversarial_qa_dbert_question_context_answer": 10000,
    "app_reviews_generate_review": 288065, "amazon_polarity_User_recommend_this_product": 3600000,
    "ropes_new_situation_background_answer": 10924, "wiki_bio_what_content": 582639, "quartz_read_passage_below_choose":
    2696, "duorc_ParaphraseRC_generate_question": 69524, "quartz_use_info_from_question_paragraph": 2696,
    "quail_description_context_question_text": 10246, "sciq_Multiple_Choice": 11679, "qasc_qa_with_combined_facts_1":
    8134, "race_high_Select_the_best_answer_no_instructions_": 62445, "quarel_testing_students": 1941,
    "adversarial_qa_dbert_tell_what_it_is": 10000, "race_middle_Read_the_article_and_answer_the_question_no_option_":
    25421, "quoref_Found_Context_Online": 19399, "cos_e_v1.11_aligned_with_common_sense": 9741,
    "wiki_qa_Generate_Question_from_Topic": 1040, "duorc_ParaphraseRC_movie_director": 69524,
    "kilt_tasks_hotpotqa_final_exam": 88869, "duorc_SelfRC_extract_answer": 60721, "ropes_background_situation_middle":
    10924, "cos_e_v1.11_i_think": 9741, "sciq_Direct_Question": 11679, "web_questions_question_answer": 3778,
    "quoref_Given_Context_Answer_Question": 19399, "race_middle_Is_this_the_right_answer": 25421,
    "quail_context_description_question_text": 10246, "duorc_ParaphraseRC_question_answering": 69524,
    "cos_e_v1.11_generate_explanation_given_text": 9741, "wiki_qa_Decide_good_answer": 20360,
    "quail_context_question_answer_description_id": 10246, "quoref_Answer_Friend_Question": 19399,
    "ropes_plain_no_background": 10924, "qasc_qa_with_separated_facts_5": 8134, "wiqa_effect_with_label_answer": 29808,
    "web_questions_potential_correct_answer": 3778, "quoref_Answer_Test": 19399, "dream_baseline": 6116,
    "wiki_hop_original_choose_best_object_affirmative_2": 43738, "wiki_hop_original_choose_best_object_affirmative_1":
    43738, "wiqa_what_is_the_final_step_of_the_following_process": 29808, "adversarial_qa_dbidaf_tell_what_it_is":
    10000, "wiki_hop_original_choose_best_object_interrogative_1": 43738, "quartz_use_info_from_paragraph_question":
    2696, "adversarial_qa_dbert_based_on": 10000, "wiki_hop_original_generate_object": 43738,
    "quail_context_question_description_answer_id": 10246, "wiki_qa_found_on_google": 20360,
    "wiqa_what_might_be_the_last_step_of_the_process": 29808, "amazon_polarity_Is_this_review_negative": 3600000,
    "wiki_hop_original_choose_best_object_interrogative_2": 43738, "kilt_tasks_hotpotqa_complex_question": 88869,
    "wiki_hop_original_choose_best_object_affirmative_3": 43738, "amazon_polarity_would_you_buy": 3600000,
    "ropes_given_background_situation": 10924, "ropes_prompt_bottom_hint_beginning": 10924,
    "race_high_Select_the_best_answer_generate_span_": 62445, "ropes_plain_bottom_hint": 10924,
    "sciq_Multiple_Choice_Closed_Book_": 11679, "social_i_qa_I_was_wondering": 33410, "amazon_polarity_Is_this_review":
    3600000, "quail_description_context_question_answer_id": 10246, "wiki_qa_Topic_Prediction_Question_and_Answer_Pair":
    1040, "qasc_qa_with_separated_facts_3": 8134, "wiki_hop_original_explain_relation": 43738, "wiki_bio_who": 582639,
    "ropes_plain_background_situation": 10924, "social_i_qa_Generate_the_question_from_the_answer": 33410,
    "qasc_is_correct_1": 8134, "web_questions_whats_the_answer": 3778, "quarel_logic_test": 1941,
    "social_i_qa_Show_choices_and_generate_index": 33410, "duorc_ParaphraseRC_title_generation": 69524,
    "dream_read_the_following_conversation_and_answer_the_question": 6116,
    "quail_context_question_answer_description_text": 10246, "sciq_Direct_Question_Closed_Book_": 11679,
    "ropes_prompt_bottom_no_hint": 10924, "quartz_having_read_above_passage": 2696, "adversarial_qa_dbidaf_based_on":
    10000, "quarel_choose_between": 1941, "duorc_ParaphraseRC_decide_worth_it": 69524, "quoref_What_Is_The_Answer":
    19399, "duorc_SelfRC_question_answering": 60721, "sciq_Multiple_Choice_Question_First": 11679,
    "wiki_qa_Topic_Prediction_Answer_Only": 1040, "adversarial_qa_droberta_question_context_answer": 10000,
    "duorc_SelfRC_decide_worth_it": 60721, "duorc_SelfRC_generate_question": 60721,
    "dbpedia_14_pick_one_category_for_the_following_text": 560000, "quail_context_question_description_text": 10246,
    "wiqa_which_of_the_following_is_the_supposed_perturbation": 29808, "quail_context_description_question_answer_id":
    10246, "quail_description_context_question_answer_text": 10246, "ropes_prompt_beginning": 10924,
    "race_middle_Write_a_multi_choice_question_options_given_": 25421, "duorc_SelfRC_movie_director": 60721,
    "quoref_Guess_Title_For_Context": 19399, "wiki_bio_comprehension": 582639, "race_high_Select_the_best_answer":
    62445, "quartz_answer_question_based_on": 2696, "amazon_polarity_flattering_or_not": 3600000,
    "quartz_paragraph_question_plain_concat": 2696, "quoref_Context_Contains_Answer": 19399,
    "ropes_read_background_situation": 10924, "adversarial_qa_dbidaf_answer_the_following_q": 10000,
    "qasc_qa_with_separated_facts_4": 8134, "duorc_SelfRC_generate_question_by_answer": 60094,
    "qasc_qa_with_separated_facts_1": 8134, "cos_e_v1.11_question_option_description_id": 9741,
    "dbpedia_14_given_a_choice_of_categories_": 560000, "wiki_bio_key_content": 582639,
    "race_high_Read_the_article_and_answer_the_question_no_option_": 62445, "dream_generate_first_utterance": 6116,
    "amazon_polarity_negative_or_positive_tone": 3600000, "duorc_ParaphraseRC_build_story_around_qa": 58752,
    "kilt_tasks_hotpotqa_straighforward_qa": 88869, "cos_e_v1.11_question_description_option_text": 9741,
    "duorc_ParaphraseRC_generate_question_by_answer": 58752, "race_high_Write_a_multi_choice_question_options_given_":
    62445, "race_high_Taking_a_test": 62445, "dream_answer_to_dialogue": 6116,
    "amazon_polarity_Is_this_product_review_positive": 3600000, "duorc_SelfRC_title_generation": 60721,
    "quail_context_question_description_answer_text": 10246, "app_reviews_convert_to_rating": 288065,
    "cos_e_v1.11_rationale": 9741, "wiqa_does_the_supposed_perturbation_have_an_effect": 29808,
    "duorc_ParaphraseRC_extract_answer": 69524, "adversarial_qa_droberta_tell_what_it_is": 10000,
    "race_middle_Taking_a_test": 25421, "quoref_Answer_Question_Given_Context": 19399, "quoref_Read_And_Extract_":
    19399, "race_middle_Write_a_multi_choice_question_for_the_following_article": 25421, "qasc_is_correct_2": 8134,
    "social_i_qa_Show_choices_and_generate_answer": 33410, "wiki_hop_original_generate_subject_and_object": 43738,
    "ropes_prompt_mix": 10924, "ropes_background_new_situation_answer": 10924, "dream_generate_last_utterance": 6116,
    "kilt_tasks_hotpotqa_combining_facts": 88869, "wiki_qa_Direct_Answer_to_Question": 1040,
    "dbpedia_14_given_list_what_category_does_the_paragraph_belong_to": 560000,
    "wiqa_what_might_be_the_first_step_of_the_process": 29808, "wiki_qa_exercise": 20360, "quoref_Guess_Answer": 19399,
    "race_middle_Select_the_best_answer": 25421, "cos_e_v1.11_explain_why_human": 9741,
    "qasc_qa_with_separated_facts_2": 8134, "adversarial_qa_dbert_answer_the_following_q": 10000
}


def kept_rows(caps, rows=TRAIN_ROWS):
    return {task: rows[task] if caps[task] is None else min(rows[task], caps[task]) for task in rows}


def test_table_covers_the_papers_tasks():
    assert list(TRAIN_ROWS) == paper_tasks()
    # the 193 tasks use every P3 template of their datasets
    per_dataset = {}
    for task in TRAIN_ROWS:
        per_dataset[dataset_of(task)] = per_dataset.get(dataset_of(task), 0) + 1
    assert per_dataset == {d: P3_TEMPLATES[d] for d in per_dataset}


def test_t0_caps_only_datasets_over_500k():
    caps = per_task_caps(TRAIN_ROWS, 500000)
    capped = {task: cap for task, cap in caps.items() if cap is not None}
    # amazon_polarity (3.6M train, 9 templates), dbpedia_14 (560k, 4), wiki_bio (582,639, 5): the only ones over 500k
    assert {dataset_of(t) for t in capped} == {"amazon_polarity", "dbpedia_14", "wiki_bio"}
    assert {capped[t] for t in capped if t.startswith("amazon_polarity")} == {500000 // 9} == {55555}
    assert {capped[t] for t in capped if t.startswith("dbpedia_14")} == {125000}
    assert {capped[t] for t in capped if t.startswith("wiki_bio")} == {100000}
    assert len(capped) == 9 + 4 + 5
    rows = kept_rows(caps)
    # app_reviews (288,065 train) and duorc (60,721 / 69,524 train, 9 templates each) are below 500k: kept whole
    assert [rows[t] for t in TRAIN_ROWS if t.startswith("app_reviews")] == [288065] * 4
    assert sum(rows[t] for t in TRAIN_ROWS if t.startswith("duorc_SelfRC")) == \
        sum(TRAIN_ROWS[t] for t in TRAIN_ROWS if t.startswith("duorc_SelfRC"))
    assert sum(rows.values()) == 6_828_577  # the superseded rule (listed templates' sum > 500k) gave 6,026,900
    assert split_sizes(6_828_577, 0.002) == {"train": 6_814_919, "validation": 6829, "test": 6829}


def test_cap_uses_the_datasets_p3_template_count_not_the_list():
    two = {"amazon_polarity_Is_this_review": 3_600_000, "amazon_polarity_would_you_buy": 3_600_000,
           "app_reviews_convert_to_rating": 288_065}
    assert per_task_caps(two, 500000) == {"amazon_polarity_Is_this_review": 55555,
                                          "amazon_polarity_would_you_buy": 55555,
                                          "app_reviews_convert_to_rating": None}
    # the threshold is the dataset's train size (its largest task), not one template's filtered rows
    duorc = {"duorc_SelfRC_answer_question": 60_094, "duorc_SelfRC_title_generation": 60_721}
    assert per_task_caps(duorc, 60_500) == {t: 60_500 // 9 for t in duorc}
    assert per_task_caps(duorc, 60_721) == {t: None for t in duorc}
    assert per_task_caps(two, 0) == {t: None for t in two}


def test_cap_per_task_reproduces_the_papers_3301_validation_rows():
    caps = per_task_caps(TRAIN_ROWS, 500000, cap_per_task=26980)
    total = sum(kept_rows(caps).values())
    assert total == 3_300_924
    assert split_sizes(total, 0.002) == {"train": 3_294_322, "validation": 3301, "test": 3301}
    assert caps["quartz_answer_question_below"] == 26980 and kept_rows(caps)["quartz_answer_question_below"] == 2696
    assert caps["amazon_polarity_Is_this_review"] == 26980  # min(55555, 26980)


def test_unknown_task_in_caps():
    with pytest.raises(HyperrestartError, match="unknown P3 task 'nope_task'"):
        per_task_caps({"nope_task": 3}, 500000)


@pytest.mark.parametrize("total, holdout", [(1, 0.002), (500, 0.002), (2, 0.4), (7, 0.1)])
def test_too_small_for_one_validation_row(total, holdout):
    with pytest.raises(HyperrestartError, match="too few for one validation row") as info:
        check_split_sizes(total, holdout)
    need = int(str(info.value).split("at least ")[1].split()[0])
    assert split_sizes(need, holdout)["validation"] == 1 and split_sizes(need - 1, holdout)["validation"] == 0
    assert need == {0.002: 501, 0.4: 3, 0.1: 11}[holdout]


def test_split_checks_pass_and_fail():
    assert check_split_sizes(1001, 0.002) == {"train": 998, "validation": 1, "test": 2}
    assert check_split_sizes(5, 0) == {"train": 5, "validation": 0, "test": 0}
    with pytest.raises(HyperrestartError, match="leaves no train rows"):
        check_split_sizes(2, 0.9)
